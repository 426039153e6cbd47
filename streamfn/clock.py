"""Time, passed in.

Every read of the time in streamfn goes through a :class:`Clock` handed to the object that
needs it, so a test's :class:`~streamfn.testing.FakeClock` really controls time. Pure
decision code takes ``now`` as an argument and never reads a clock at all.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch: event timestamps, ages, TTLs."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: durations and deadlines."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time. Cancellable."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


async def wait_for_change(changed: anyio.Event, seconds: float, clock: Clock) -> None:
    """Wait until ``changed`` is set or ``seconds`` pass on ``clock`` (so a FakeClock
    controls it). Cancellable."""
    async with anyio.create_task_group() as tg:

        async def timer() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(timer)
        await changed.wait()
        tg.cancel_scope.cancel()
