"""Every built-in event source passes the public conformance checks, and the cron source
keeps its schedule on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.cron.config import CronConfig
from connectors.cron.source import CronSource
from connectors.filedrop.config import FiledropConfig
from connectors.filedrop.source import FiledropSource
from streamfn.testing import FakeClock, MemoryEngine, check_event_source

pytestmark = pytest.mark.anyio


async def test_filedrop_conforms(tmp_path: Path) -> None:
    config = FiledropConfig(function="fn", path="inbox", stable_for=0.2)

    async def produce() -> None:
        (tmp_path / "inbox").mkdir(exist_ok=True)
        for name in ("a.txt", "b.txt", "c d.txt"):
            (tmp_path / "inbox" / name).write_text(name)

    engine = await check_event_source(
        lambda: FiledropSource(config), produce=produce, expected=3, root=tmp_path
    )
    keys = sorted(event["Records"][0]["s3"]["object"]["key"] for event, _ in engine.events)
    assert keys == ["a.txt", "b.txt", "c+d.txt"]


async def test_cron_conforms() -> None:
    clock = FakeClock(start=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="rate(1 minute)")

    async def produce() -> None:
        await clock.advance(150)  # t=0 (the first tick fires at start), 60, 120

    async def settle() -> None:
        await clock.advance(0)

    engine = await check_event_source(
        lambda: CronSource(config),
        produce=produce,
        expected=3,
        root=Path("."),
        clock=clock,
        settle=settle,
    )
    times = [event["time"] for event, _ in engine.events]  # type: ignore[index]
    assert times == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]


async def test_cron_fires_a_missed_tick_once_after_downtime() -> None:
    clock = FakeClock(start=datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="cron(0 * * * ? *)")  # hourly
    engine = MemoryEngine()
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(config).run, engine.context(root=Path("."), clock=clock))
        await clock.advance(3600)
        tg.cancel_scope.cancel()
    assert [e["time"] for e, _ in engine.events] == [
        "2026-01-01T12:00:00Z",  # type: ignore[index]
        "2026-01-01T13:00:00Z",
    ]
    # Down for five hours, then back: the missed hours fire once, as the latest of them.
    await clock.advance(5 * 3600 + 1800)
    after = MemoryEngine(checkpoints=dict(engine.checkpoints))
    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(config).run, after.context(root=Path("."), clock=clock))
        await clock.advance(1)
        tg.cancel_scope.cancel()
    assert [e["time"] for e, _ in after.events] == ["2026-01-01T18:00:00Z"]  # type: ignore[index]

    skip = CronConfig(function="fn", schedule="cron(0 * * * ? *)", catch_up=False)
    await clock.advance(3 * 3600)
    skipped = MemoryEngine(checkpoints=dict(after.checkpoints))
    async with anyio.create_task_group() as tg:
        tg.start_soon(CronSource(skip).run, skipped.context(root=Path("."), clock=clock))
        await clock.advance(1)
        tg.cancel_scope.cancel()
    assert skipped.events == []


async def test_filedrop_skips_a_file_deleted_before_it_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The race itself cannot be scheduled from outside, so this drives the source's
    # take step directly on a file that vanished after it was found complete.
    config = FiledropConfig(function="fn", path="inbox")
    source = FiledropSource(config)
    engine = MemoryEngine()
    source._context = engine.context(root=tmp_path)
    source._root = tmp_path / "inbox"
    source._bucket = "inbox"
    source._seen = {}
    await source._take("gone.txt", tmp_path / "inbox" / "gone.txt")
    assert engine.events == []
    assert "skipping gone.txt: deleted or rewritten before it was processed" in caplog.text


async def test_cron_uses_the_anchor_another_instance_stored_first() -> None:
    # Two instances of a fleet start together: both read no anchor, and the other one
    # stores its anchor first. This instance must follow that schedule, not start its own.
    import dataclasses

    import anyio

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
    times = [e["time"] for e, _ in engine.events]  # type: ignore[index]
    assert times == ["2026-01-01T11:59:30Z", "2026-01-01T12:00:30Z"]
