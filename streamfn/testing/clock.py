"""A fake clock for tests: time moves only when the test says so."""

from __future__ import annotations

import heapq
import itertools
import math

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told. ``sleep`` waits until :meth:`advance` passes
    the sleeper's deadline; ``time`` and ``monotonic`` move together, except that
    :meth:`jump_wall` moves wall time alone (a suspended host, an NTP step)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or math.isnan(seconds):
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        await wake.wait()

    def step(self, seconds: float) -> None:
        """Move time forward now, waking the sleepers whose deadline passes; unlike
        :meth:`advance` it does not wait for them to run (for synchronous test code)."""
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            heapq.heappop(self._sleepers)[2].set()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order, and
        letting the woken tasks run before time moves on."""
        target = self._elapsed + seconds
        await anyio.wait_all_tasks_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, deadline)
            wake.set()
            await anyio.wait_all_tasks_blocked()
        self._elapsed = target
        await anyio.wait_all_tasks_blocked()

    def jump_wall(self, seconds: float) -> None:
        """Move wall time (:meth:`time`) by ``seconds``, forward or back, without moving
        monotonic time: sleepers, whose deadlines are monotonic, are not woken. What a host
        suspended for ``seconds`` (``CLOCK_MONOTONIC`` stops meanwhile) or a wall-clock step
        looks like to a program."""
        self._start += seconds

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)
