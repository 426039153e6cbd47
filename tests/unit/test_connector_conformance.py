"""The built-in cron source passes the public conformance checks on a fake clock, and the
checks catch a source that breaks the contract. (filedrop, which needs a real directory,
passes them in tests/integration/test_filedrop_conformance.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from connectors.cron.config import CronConfig
from connectors.cron.source import CronSource
from streamfn.events.contract import SourceContext
from streamfn.testing import FakeClock, MemoryEngine, check_event_source

pytestmark = pytest.mark.anyio


async def test_cron_conforms() -> None:
    clock = FakeClock(start=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    config = CronConfig(function="fn", schedule="rate(1 minute)")

    async def produce() -> None:
        await clock.advance(150)  # t=0 (the first tick fires at start), 60, 120

    engine = await check_event_source(
        lambda: CronSource(config), produce=produce, expected=3, root=Path("."), clock=clock
    )
    times = [event["time"] for event, _ in engine.events]  # type: ignore[index]
    assert times == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]


class Counter:
    """A plugin-like source emitting ``count`` numbered events, checkpointing the next one
    either with each event (right) or before emitting it (wrong) or while it is being
    emitted (wrong)."""

    def __init__(self, count: int, *, checkpoint: str = "with") -> None:
        self.count = count
        self.checkpoint = checkpoint

    async def run(self, context: SourceContext) -> None:
        start = int((await context.get_checkpoints()).get("next", b"0"))
        for i in range(start, self.count):
            mark = ("next", str(i + 1).encode())
            if self.checkpoint == "with":
                await context.emit({"i": i}, f"n-{i}", checkpoint=mark)
            elif self.checkpoint == "before":
                await context.put_checkpoint(*mark)
                await context.emit({"i": i}, f"n-{i}")
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(context.emit, {"i": i}, f"n-{i}")
                    await anyio.lowlevel.checkpoint()  # the emit has started
                    await context.put_checkpoint(*mark)
        await anyio.sleep_forever()


async def nothing() -> None:
    pass


async def test_a_source_that_checkpoints_with_its_events_passes() -> None:
    clock = FakeClock()
    engine = await check_event_source(
        lambda: Counter(3), produce=nothing, expected=3, root=Path("."), clock=clock
    )
    assert [key for _, key in engine.events] == ["n-0", "n-1", "n-2"]
    assert engine.journal[:2] == [("emit", "n-0"), ("emitted", "n-0")]


async def test_a_source_that_checkpoints_before_emitting_fails() -> None:
    # Its checkpoint claims the event taken before it is queued: an emit that fails (a
    # store outage, a crash) loses the event.
    with pytest.raises(AssertionError, match="the event whose emit failed \\('n-0'\\) was not"):
        await check_event_source(
            lambda: Counter(3, checkpoint="before"),
            produce=nothing,
            expected=3,
            root=Path("."),
            clock=FakeClock(),
            limit=2,
        )


async def test_a_source_that_checkpoints_while_its_emit_runs_fails() -> None:
    with pytest.raises(AssertionError, match="checkpoints written before an emit returned"):
        await check_event_source(
            lambda: Counter(3, checkpoint="during"),
            produce=nothing,
            expected=3,
            root=Path("."),
            clock=FakeClock(),
        )


async def test_the_kit_never_sleeps_on_real_time_when_given_a_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def real_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s of real time")

    monkeypatch.setattr(anyio, "sleep", real_sleep)
    engine = await check_event_source(
        lambda: Counter(2), produce=nothing, expected=2, root=Path("."), clock=FakeClock()
    )
    assert len(engine.events) == 2


def test_memory_engine_reports_checkpoints_written_during_an_emit() -> None:
    engine = MemoryEngine(
        journal=[("emit", "a"), ("checkpoint", "x"), ("emitted", "a"), ("checkpoint", "y")]
    )
    assert engine.checkpoints_while_emitting() == ["x"]
