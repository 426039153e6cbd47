"""Deadlines on the clock for every invocation, watched by one task.

A watchdog per invocation — a task group, a task, a cancel scope — costs about 50 µs, a
quarter of a warm round trip. Instead each invocation (and each init) enters
:meth:`Deadlines.limit`, a cancel scope that :meth:`Deadlines.run`, the runtime's one
watchdog task, cancels when the clock reaches its deadline. The watchdog sleeps on the
clock until the earliest deadline; a new deadline earlier than that one wakes it (rare:
deadlines mostly arrive in order). Finished entries leave the heap lazily, and the heap is
rebuilt when they outnumber the running ones, so it stays proportional to what runs.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
from collections.abc import Iterator

import anyio

from streamfn.clock import Clock


class _Entry:
    __slots__ = ("active", "scope")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.active = True


class Deadlines:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._active = 0
        self._next = math.inf
        self._sleep: anyio.CancelScope | None = None

    @contextlib.contextmanager
    def limit(self, deadline: float) -> Iterator[anyio.CancelScope]:
        """A cancel scope cancelled when the clock's ``monotonic()`` reaches ``deadline``;
        its ``cancelled_caught`` tells whether that cut the block short."""
        entry = _Entry(anyio.CancelScope())
        heapq.heappush(self._heap, (deadline, next(self._order), entry))
        self._active += 1
        if deadline < self._next and self._sleep is not None:
            self._sleep.cancel()  # the watchdog sleeps past this one: wake it
        try:
            with entry.scope:
                yield entry.scope
        finally:
            entry.active = False
            self._active -= 1
            if len(self._heap) > 2 * self._active + 64:
                self._heap = [item for item in self._heap if item[2].active]
                heapq.heapify(self._heap)

    async def run(self) -> None:
        """The watchdog; the owner's task, until cancelled."""
        while True:
            now = self._clock.monotonic()
            while self._heap and (not self._heap[0][2].active or self._heap[0][0] <= now):
                _, _, entry = heapq.heappop(self._heap)
                if entry.active:
                    entry.scope.cancel()
            self._next = self._heap[0][0] if self._heap else math.inf
            with anyio.CancelScope() as self._sleep:
                if self._heap:
                    await self._clock.sleep(self._next - now)
                else:
                    await anyio.sleep_forever()
            self._sleep = None
