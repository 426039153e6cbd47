"""One watchdog for every invocation's deadline, on a fake clock."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from streamfn.runtime.deadlines import Deadlines
from streamfn.testing import FakeClock

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


async def test_a_block_running_past_its_deadline_is_cancelled() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    outcome: list[bool] = []

    async def slow() -> None:
        with deadlines.limit(clock.monotonic() + 3) as scope:
            await anyio.sleep_forever()
        outcome.append(scope.cancelled_caught)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deadlines.run)
        tasks.start_soon(slow)
        await settle()
        await clock.advance(2.9)
        assert outcome == []
        await clock.advance(0.1)
        assert outcome == [True]
        tasks.cancel_scope.cancel()


async def test_a_block_that_finished_is_left_alone() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deadlines.run)
        with deadlines.limit(clock.monotonic() + 1) as scope:
            await settle()
        await clock.advance(5)
        assert not scope.cancel_called
        tasks.cancel_scope.cancel()


async def test_an_earlier_deadline_wakes_the_watchdog() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    ended: list[str] = []

    async def run(name: str, seconds: float) -> None:
        with deadlines.limit(clock.monotonic() + seconds):
            await anyio.sleep_forever()
        ended.append(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deadlines.run)
        tasks.start_soon(run, "long", 900)
        await settle()
        tasks.start_soon(run, "short", 1)
        await settle()
        await clock.advance(1)
        assert ended == ["short"]
        await clock.advance(899)
        assert ended == ["short", "long"]
        tasks.cancel_scope.cancel()


async def test_finished_entries_do_not_pile_up_behind_a_long_one() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(deadlines.run)
        with deadlines.limit(clock.monotonic() + 900):
            for _ in range(10_000):
                with deadlines.limit(clock.monotonic() + 3):
                    pass
            assert len(deadlines._heap) < 200
        tasks.cancel_scope.cancel()


async def test_an_outer_cancellation_passes_through() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    with anyio.CancelScope() as outer:
        with deadlines.limit(clock.monotonic() + 3) as inner:
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught and not inner.cancelled_caught
