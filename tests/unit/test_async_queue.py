"""The async dispatcher: a flood of events waits on disk, within the concurrency limit."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from streamfn.config import parse_config
from streamfn.events.dispatcher import AsyncQueue
from streamfn.invoke.invoker import Invoker
from streamfn.state.sqlite import open_sqlite_store
from streamfn.testing import FakeClock, GatedRuntime

pytestmark = pytest.mark.anyio


async def test_a_flood_of_events_runs_within_max_concurrency(tmp_path: Path) -> None:
    config = parse_config(
        {"service": {"max_concurrency": 4}, "functions": {"f": {"handler": "m:h"}}},
        {},
        path=tmp_path / "streamfn.toml",
    )
    runtime = GatedRuntime()
    clock = FakeClock()
    async with open_sqlite_store(tmp_path / "state.db") as store:
        queue = AsyncQueue(config, store, Invoker(config, runtime), clock)
        for i in range(500):
            assert await queue.enqueue("f", b"{}", f"key-{i}")
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            with anyio.fail_after(10):
                while runtime.running < 4:  # noqa: ASYNC110 - observing the dispatcher
                    await anyio.sleep(0.01)
            assert runtime.running == 4 and queue.in_flight() == 4
            assert await store.pending() == 500  # the rest waits in the store, not in memory
            runtime.gate.set()
            with anyio.fail_after(30):
                while runtime.done < 500:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            queue.stop()
        assert runtime.peak == 4
        assert await store.pending() == 0
        assert queue.statistics.succeeded == 500


async def test_an_event_whose_key_completed_is_not_invoked_again(tmp_path: Path) -> None:
    config = parse_config(
        {"functions": {"f": {"handler": "m:h"}}}, {}, path=tmp_path / "streamfn.toml"
    )
    runtime = GatedRuntime()
    runtime.gate.set()
    async with open_sqlite_store(tmp_path / "state.db") as store:
        queue = AsyncQueue(config, store, Invoker(config, runtime), FakeClock())
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            await queue.enqueue("f", b"{}", "order-1")
            with anyio.fail_after(10):
                while runtime.done < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # Redelivered (a source re-emitting after a crash): the key is completed.
            await queue.enqueue("f", b"{}", "order-1")
            with anyio.fail_after(10):
                while queue.statistics.duplicates < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            queue.stop()
        assert runtime.done == 1
        assert await store.pending() == 0
