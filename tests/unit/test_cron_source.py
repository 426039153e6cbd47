"""The cron source on a fake clock: it keeps its schedule across downtime, fleet starts,
host suspends and wall-clock steps, and bad checkpoints never stop it."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from connectors.cron.config import CronConfig
from connectors.cron.source import CronSource
from streamfn.testing import FakeClock, MemoryEngine

pytestmark = pytest.mark.anyio


def times(engine: MemoryEngine) -> list[str]:
    return [event["time"] for event, _ in engine.events]  # type: ignore[index]


async def run_for(
    source: CronSource, engine: MemoryEngine, clock: FakeClock, seconds: float
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run, engine.context(root=Path("."), clock=clock))
        await clock.advance(seconds)
        tg.cancel_scope.cancel()


async def test_a_missed_tick_fires_once_after_downtime() -> None:
    clock = FakeClock(start=datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="cron(0 * * * ? *)")  # hourly
    engine = MemoryEngine()
    await run_for(CronSource(config), engine, clock, 3600)
    assert times(engine) == ["2026-01-01T12:00:00Z", "2026-01-01T13:00:00Z"]
    # Down for five hours, then back: the missed hours fire once, as the latest of them.
    await clock.advance(5 * 3600 + 1800)
    after = MemoryEngine(checkpoints=dict(engine.checkpoints))
    await run_for(CronSource(config), after, clock, 1)
    assert times(after) == ["2026-01-01T18:00:00Z"]

    skip = CronConfig(function="fn", schedule="cron(0 * * * ? *)", catch_up=False)
    await clock.advance(3 * 3600)
    skipped = MemoryEngine(checkpoints=dict(after.checkpoints))
    await run_for(CronSource(skip), skipped, clock, 1)
    assert skipped.events == []


async def test_it_uses_the_anchor_another_instance_stored_first() -> None:
    # Two instances of a fleet start together: both read no anchor, and the other one
    # stores its anchor first. This instance must follow that schedule, not start its own.
    clock = FakeClock(start=datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    other = datetime(2026, 1, 1, 11, 59, 30, tzinfo=UTC)
    engine = MemoryEngine(checkpoints={"anchor": other.isoformat().encode()})

    async def nothing_yet() -> dict[str, bytes]:
        return {}

    context = dataclasses.replace(
        engine.context(root=Path("."), clock=clock), get_checkpoints=nothing_yet
    )
    config = CronConfig(function="fn", schedule="rate(1 minute)")
    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(config).run, context)
        await clock.advance(30)
        tg.cancel_scope.cancel()
    # The other instance's ticks (same idempotency keys, so queued once between them), not
    # 12:00:00 and 12:01:00 of a schedule of its own.
    assert times(engine) == ["2026-01-01T11:59:30Z", "2026-01-01T12:00:30Z"]


@pytest.mark.parametrize("jump", [2 * 3600, 2 * 3600 - 30])
async def test_a_daily_tick_fires_at_its_wall_time_after_a_suspend(jump: float) -> None:
    # The host sleeps for about two hours (monotonic time stops, wall time goes on): the
    # 02:00 tick must come within a minute of its wall time, not two hours of monotonic
    # time later.
    clock = FakeClock(start=datetime(2026, 1, 1, 0, 0, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="cron(0 2 * * ? *)")
    engine = MemoryEngine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(config).run, engine.context(root=Path("."), clock=clock))
        await clock.advance(0)
        clock.jump_wall(jump)
        await clock.advance(60)
        tg.cancel_scope.cancel()
    assert times(engine) == ["2026-01-01T02:00:00Z"]


async def test_a_wall_clock_step_back_delays_nothing_and_repeats_nothing() -> None:
    clock = FakeClock(start=datetime(2026, 1, 1, 1, 59, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="cron(0 2 * * ? *)")
    engine = MemoryEngine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(config).run, engine.context(root=Path("."), clock=clock))
        await clock.advance(61)
        assert times(engine) == ["2026-01-01T02:00:00Z"]
        clock.jump_wall(-600)  # NTP steps the clock back ten minutes
        await clock.advance(24 * 3600 - 60)
        assert times(engine) == ["2026-01-01T02:00:00Z"]  # 01:50 on the 2nd, by the wall
        await clock.advance(600 + 60)
        tg.cancel_scope.cancel()
    assert times(engine) == ["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z"]


@pytest.mark.parametrize(
    "stored",
    [b"not a time", b"\xff\xfe", b"2026-01-01T00:00:00"],  # the last has no zone
)
async def test_an_unreadable_checkpoint_is_logged_once_and_does_not_stop_the_source(
    stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock(start=datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="rate(1 minute)")
    engine = MemoryEngine(checkpoints={"anchor": stored, "last_fired": stored})
    source = CronSource(config)
    await run_for(source, engine, clock, 60)
    # The anchor starts anew now; the unreadable last tick counts as none.
    assert times(engine) == ["2026-01-01T12:00:30Z", "2026-01-01T12:01:30Z"]
    assert source.statistics().bad_checkpoints == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"checkpoint anchor = {stored!r} is not an ISO 8601 time")
    assert warnings[1].startswith(f"checkpoint last_fired = {stored!r} is not an ISO 8601")
    # The replaced anchor is stored: the next start reads it without a warning.
    assert engine.checkpoints["anchor"] == b"2026-01-01T12:00:30+00:00"
