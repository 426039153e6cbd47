"""The async dispatcher over a real SQLite store, on a fake clock.

Each test drives the dispatcher through its public surface: events go in through the
intake, the runtime is a test double at the runtime boundary, time moves only when the
test advances the FakeClock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamfn.config import Config, parse_config
from streamfn.events.dispatcher import ORPHAN_AGE, Dispatcher
from streamfn.invoke.destinations import DestinationWriter
from streamfn.invoke.invoker import Invoker
from streamfn.policies import dispatch_policy, invoker_policy
from streamfn.runtime.base import Runtime
from streamfn.services import Services
from streamfn.state.base import StateStore
from streamfn.state.intake import Intake
from streamfn.state.sqlite import open_sqlite_store
from streamfn.testing import FakeClock, GatedRuntime
from streamfn.types import InvocationRequest, InvocationResult, Outcome, Report

pytestmark = pytest.mark.anyio

REPORT = Report(duration_ms=1, billed_duration_ms=1, memory_size_mb=128, max_memory_used_mb=1)


class ScriptedRuntime:
    """Each invocation records its request, waits for its own release when ``held``, and
    fails while ``failing(request)`` says so."""

    def __init__(
        self,
        *,
        held: bool = False,
        failing: Callable[[InvocationRequest], bool] = lambda request: False,
    ) -> None:
        self.calls: list[InvocationRequest] = []
        self.running: list[tuple[InvocationRequest, anyio.Event]] = []
        self._held = held
        self._failing = failing

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        self.calls.append(request)
        if self._held:
            release = anyio.Event()
            self.running.append((request, release))
            await release.wait()
        if self._failing(request):
            return InvocationResult(
                request_id=request.request_id,
                outcome=Outcome.FUNCTION_ERROR,
                payload=b'{"errorType": "ValueError", "errorMessage": "no"}',
                report=REPORT,
            )
        return InvocationResult(
            request_id=request.request_id, outcome=Outcome.SUCCESS, payload=b'"ok"', report=REPORT
        )

    def release_one(self, function: str | None = None) -> InvocationRequest:
        for i, (request, release) in enumerate(self.running):
            if function is None or request.function == function:
                del self.running[i]
                release.set()
                return request
        raise AssertionError(f"nothing of {function} is running")


@dataclass
class Harness:
    config: Config
    store: StateStore
    services: Services
    dispatcher: Dispatcher
    clock: FakeClock

    async def enqueue(self, function: str, key: str, payload: object = None) -> bool:
        data = json.dumps(payload if payload is not None else {"key": key}).encode()
        return await self.services.intake.enqueue(function, data, key)

    async def settle(self) -> None:
        """Let every task run until all wait (on the clock, the runtime or the store)."""
        for _ in range(3):  # the store thread answers between the loop's idle points
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.005)
        await anyio.wait_all_tasks_blocked()


def make_config(tmp_path: Path, functions: dict[str, Any], max_concurrency: int = 4) -> Config:
    raw = {"service": {"max_concurrency": max_concurrency}, "functions": functions}
    return parse_config(raw, {}, path=tmp_path / "streamfn.toml")


def make_services(
    config: Config, store: StateStore, runtime: Runtime, clock: FakeClock
) -> Services:
    intake = Intake(store, clock)
    return Services(
        clock=clock,
        store=store,
        invoker=Invoker(invoker_policy(config), runtime),
        intake=intake,
        destinations=DestinationWriter(config.root, intake.destination),
        log_for=lambda part: logging.getLogger(f"streamfn.{part}"),
        region="local",
        account="000000000000",
    )


@asynccontextmanager
async def dispatching(
    tmp_path: Path,
    functions: dict[str, Any],
    runtime: Runtime,
    *,
    clock: FakeClock | None = None,
    max_concurrency: int = 4,
    run_functions: dict[str, Any] | None = None,
) -> AsyncIterator[Harness]:
    """A dispatcher for ``run_functions`` (default: all ``functions``) over ``state.db``."""
    clock = clock or FakeClock()
    config = make_config(tmp_path, functions, max_concurrency)
    runs = make_config(tmp_path, run_functions or functions, max_concurrency)
    async with open_sqlite_store(tmp_path / "state.db") as store:
        services = make_services(config, store, runtime, clock)
        dispatcher = Dispatcher(dispatch_policy(runs), services)
        harness = Harness(config, store, services, dispatcher, clock)
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            yield harness
            tg.cancel_scope.cancel()


def count_rows(tmp_path: Path, table: str) -> int:
    with sqlite3.connect(tmp_path / "state.db") as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def records(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


async def test_a_flood_of_events_runs_within_max_concurrency(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    async with dispatching(tmp_path, {"f": {"handler": "m:h"}}, runtime) as h:
        for i in range(500):
            assert await h.enqueue("f", f"key-{i}")
        with anyio.fail_after(10):
            while runtime.running < 4:  # noqa: ASYNC110 - observing the dispatcher
                await anyio.sleep(0.01)
        assert runtime.running == 4 and h.dispatcher.in_flight() == 4
        assert await h.store.pending() == 500  # the rest waits in the store, not in memory
        runtime.gate.set()
        with anyio.fail_after(30):
            while runtime.done < 500:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            while h.dispatcher.statistics().succeeded < 500:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert runtime.peak == 4
        assert await h.store.pending() == 0
        stats = h.dispatcher.statistics()
        assert stats.succeeded == 500 and stats.received == 500


async def test_an_event_whose_key_completed_is_not_invoked_again(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    async with dispatching(tmp_path, {"f": {"handler": "m:h"}}, runtime) as h:
        await h.enqueue("f", "order-1")
        with anyio.fail_after(10):
            while h.dispatcher.statistics().succeeded < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        # Redelivered (a source re-emitting after a crash): the key is completed.
        await h.enqueue("f", "order-1")
        with anyio.fail_after(10):
            while h.dispatcher.statistics().duplicates < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert runtime.done == 1
        assert await h.store.pending() == 0


async def test_a_function_at_its_reserved_concurrency_throttles_instead_of_holding_workers(
    tmp_path: Path,
) -> None:
    """Review C1: waiting for a slot while the lease and claim clocks ran gave duplicate
    invocations, and one throttled function held every worker."""
    runtime = ScriptedRuntime(held=True)
    functions = {
        "f": {"handler": "m:h", "timeout": 1, "reserved_concurrency": 1},
        "g": {"handler": "m:h"},
    }
    async with dispatching(tmp_path, functions, runtime, max_concurrency=4) as h:
        for n in range(4):
            await h.enqueue("f", f"f-{n}")
        await h.enqueue("g", "g-0")
        await h.settle()
        # One f runs; the other three went back with throttle backoff; g runs beside it.
        assert sorted(r.function for r, _ in runtime.running) == ["f", "g"]
        assert h.dispatcher.in_flight() == 2
        assert h.dispatcher.statistics().throttled == 3
        runtime.release_one("g")
        for _ in range(3):  # f's backlog drains one at a time, each once
            runtime.release_one("f")
            for _ in range(12):  # backoff 1, 2, 4, ... s: until the next f has begun
                await h.clock.advance(5)
                await h.settle()
                if runtime.running:
                    break
        runtime.release_one("f")
        await h.settle()
        keys = [json.loads(r.payload)["key"] for r in runtime.calls]
        assert sorted(keys) == ["f-0", "f-1", "f-2", "f-3", "g-0"]  # each key ran once
        assert keys.index("g-0") < 2  # g did not wait behind f's backlog
        assert await h.store.pending() == 0
        assert h.dispatcher.statistics().succeeded == 5


async def test_async_retries_wait_on_the_clock(tmp_path: Path) -> None:
    """Issue 8 hole 10: retry delays were computed on the clock but waited in real time."""
    runtime = ScriptedRuntime(failing=lambda request: True)
    functions = {
        "f": {
            "handler": "m:h",
            "async": {"maximum_retry_attempts": 2, "retry_delay": 60, "on_failure": "dir:failed"},
        }
    }
    async with dispatching(tmp_path, functions, runtime) as h:
        await h.enqueue("f", "k")
        await h.settle()
        assert len(runtime.calls) == 1
        await h.clock.advance(59)
        await h.settle()
        assert len(runtime.calls) == 1
        await h.clock.advance(1)
        await h.settle()
        assert len(runtime.calls) == 2
        await h.clock.advance(120)
        await h.settle()
        assert len(runtime.calls) == 3
        with anyio.fail_after(10):
            while not records(tmp_path / "failed"):
                await h.settle()
        [record] = records(tmp_path / "failed")
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert {r.request_id for r in runtime.calls} == {record["requestContext"]["requestId"]}


async def test_a_failing_success_destination_never_runs_the_handler_again(tmp_path: Path) -> None:
    """Review C2: a destination failure after success requeued the event and re-ran it."""
    runtime = ScriptedRuntime()
    blocked = tmp_path / "ok"
    blocked.write_text("a file where the directory should be")
    functions = {"f": {"handler": "m:h", "timeout": 3, "async": {"on_success": "dir:ok"}}}
    async with dispatching(tmp_path, functions, runtime) as h:
        await h.enqueue("f", "k")
        await h.settle()
        for _ in range(10):
            await h.clock.advance(2 * (3 + 60) + 5)
            await h.settle()
        assert len(runtime.calls) == 1
        assert await h.store.pending() == 0  # decided: out of the queue at once
        assert h.dispatcher.statistics().destination_failures >= 2
        blocked.unlink()
        await h.clock.advance(300)
        with anyio.fail_after(10):
            while not records(blocked):
                await h.settle()
        [record] = records(blocked)
        assert record["requestContext"]["condition"] == "Success"
        assert record["requestContext"]["approximateInvokeCount"] == 1
        assert len(runtime.calls) == 1
        assert count_rows(tmp_path, "outbox") == 0


async def test_a_failing_failure_destination_keeps_the_invoke_count_right(tmp_path: Path) -> None:
    runtime = ScriptedRuntime(failing=lambda request: True)
    blocked = tmp_path / "failed"
    blocked.write_text("not a directory")
    functions = {
        "f": {
            "handler": "m:h",
            "async": {"maximum_retry_attempts": 2, "retry_delay": 1, "on_failure": "dir:failed"},
        }
    }
    async with dispatching(tmp_path, functions, runtime) as h:
        await h.enqueue("f", "k")
        for _ in range(20):
            await h.clock.advance(30)
            await h.settle()
        assert len(runtime.calls) == 3
        blocked.unlink()
        await h.clock.advance(300)
        with anyio.fail_after(10):
            while not records(blocked):
                await h.settle()
        [record] = records(blocked)
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert len(runtime.calls) == 3


async def test_an_attempt_that_kills_the_engine_still_counts(tmp_path: Path) -> None:
    """Issue 8 hole 15: the attempt is recorded before the handler starts, so an event
    that kills whatever runs it runs out of attempts and reaches on_failure."""
    functions = {
        "f": {
            "handler": "m:h",
            "timeout": 1,
            "async": {"maximum_retry_attempts": 2, "on_failure": "dir:failed"},
        }
    }
    clock = FakeClock()
    for _ in range(3):  # each run dies (is cancelled) while the handler runs
        runtime = ScriptedRuntime(held=True)
        async with dispatching(tmp_path, functions, runtime, clock=clock) as h:
            if not await h.store.pending():
                await h.enqueue("f", "poison")
            with anyio.fail_after(10):
                while not runtime.running:
                    await h.settle()
        await clock.advance(1 + 60)  # the dead owner's lease and claim run out
    runtime = ScriptedRuntime()
    async with dispatching(tmp_path, functions, runtime, clock=clock) as h:
        with anyio.fail_after(10):
            while not records(tmp_path / "failed"):
                await h.settle()
        assert runtime.calls == []  # the fourth start does not run it again
        [record] = records(tmp_path / "failed")
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert await h.store.pending() == 0


async def test_events_of_a_function_this_instance_does_not_run_are_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review C3: an unknown function's event crash-looped the engine (KeyError)."""
    runtime = ScriptedRuntime()
    functions = {"f": {"handler": "m:h"}, "gone": {"handler": "m:h"}}
    async with dispatching(
        tmp_path, functions, runtime, run_functions={"f": {"handler": "m:h"}}
    ) as h:
        await h.enqueue("gone", "old-1")
        await h.enqueue("gone", "old-2")
        await h.enqueue("f", "k")
        await h.settle()
        assert [r.function for r in runtime.calls] == ["f"]
        assert await h.store.pending() == 2  # another instance may run "gone"
        await h.clock.advance(ORPHAN_AGE - 120)
        await h.settle()
        assert await h.store.pending() == 2
        with caplog.at_level(logging.ERROR, logger="streamfn.async"):
            await h.clock.advance(240)  # past the age nobody could be running them at
            with anyio.fail_after(10):
                while await h.store.pending():
                    await h.settle()
        assert h.dispatcher.statistics().orphans_dropped == 2
        dropped = [r for r in caplog.records if "gone" in r.getMessage()]
        assert len(dropped) == 1  # logged once for the function
        assert [r.function for r in runtime.calls] == ["f"]


async def test_housekeeping_keeps_idempotency_records_bounded(tmp_path: Path) -> None:
    """Issue 8 hole 8: expire() was never called, one row per async event forever."""
    runtime = GatedRuntime()
    runtime.gate.set()
    async with dispatching(tmp_path, {"tick": {"handler": "m:h"}}, runtime) as h:
        intake = h.services.intake
        for minute in range(100):  # 10,000 ticks, each with a one-minute TTL
            for n in range(100):
                await intake.enqueue("tick", b"{}", f"tick-{minute}-{n}", ttl=60)
            with anyio.fail_after(30):
                while h.dispatcher.statistics().succeeded < (minute + 1) * 100:  # noqa: ASYNC110
                    await anyio.sleep(0.002)
            await h.clock.advance(60)
        await h.settle()
        assert runtime.done == 10_000
        assert count_rows(tmp_path, "idempotency") <= 200
        assert h.dispatcher.statistics().expired_keys >= 9_800


class LeaseThenWait:
    """The real store, but ``lease`` waits for ``gate`` after leasing (as a slow reply
    would): stop() then arrives while leased events are in the dispatcher's hands."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.gate = anyio.Event()
        self.leased = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def lease(self, **kwargs: Any) -> Any:
        events = await self._store.lease(**kwargs)
        if events:
            self.leased.set()
            await self.gate.wait()
        return events


async def test_events_leased_when_stop_comes_are_still_run(tmp_path: Path) -> None:
    """Review C11: events leased but not yet handed to a worker stayed leased at stop."""
    runtime = GatedRuntime()
    runtime.gate.set()
    clock = FakeClock()
    config = make_config(tmp_path, {"f": {"handler": "m:h"}})
    async with open_sqlite_store(tmp_path / "state.db") as real:
        store = LeaseThenWait(real)
        services = make_services(config, store, runtime, clock)
        dispatcher = Dispatcher(dispatch_policy(config), services)
        for n in range(8):
            await services.intake.enqueue("f", b"{}", f"k-{n}")
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            with anyio.fail_after(10):
                await store.leased.wait()
            dispatcher.stop()
            store.gate.set()
            with anyio.fail_after(10):
                await dispatcher.drained()
        assert runtime.done == 4  # all it had leased (max_concurrency 4) ran to the end
        assert await real.pending() == 4
        left = await real.lease(now=clock.time(), limit=10, lease_for=30)
        assert len(left) == 4  # the rest was never leased: due at once for the next start


async def test_a_decided_outcome_is_recorded_once_the_store_is_back(tmp_path: Path) -> None:
    """The store waits out an outage (here another connection holds the write lock) on the
    clock; the decision made meanwhile is written once it is back, and the handler ran once."""
    runtime = ScriptedRuntime(held=True)
    clock = FakeClock()
    config = make_config(tmp_path, {"f": {"handler": "m:h", "timeout": 300}})  # outlives it
    async with open_sqlite_store(tmp_path / "state.db", busy_timeout=0, clock=clock) as store:
        services = make_services(config, store, runtime, clock)
        dispatcher = Dispatcher(dispatch_policy(config), services)
        await services.intake.enqueue("f", b"{}", "k")
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            with anyio.fail_after(10):
                while not runtime.running:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            lock = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")  # the outage: every write is refused
                runtime.release_one()
                for _ in range(10):  # a minute on the clock: the writer keeps waiting
                    await clock.advance(6)
                    await anyio.sleep(0.01)
                assert dispatcher.statistics().succeeded == 0
                lock.execute("ROLLBACK")
            finally:
                lock.close()
            with anyio.fail_after(10):
                while dispatcher.statistics().succeeded < 1:
                    await clock.advance(1)
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert len(runtime.calls) == 1
        assert await store.pending() == 0


async def test_enqueue_callers_cancelled_during_an_outage_hold_no_one_up(tmp_path: Path) -> None:
    """The store waits out an outage (another connection holds the write lock); a writer
    cancelled meanwhile hands the rest of its batch to the next caller, which writes it
    once the store is back: nobody waits forever, and no event is lost."""
    clock = FakeClock()
    async with open_sqlite_store(tmp_path / "state.db", busy_timeout=0, clock=clock) as store:
        intake = Intake(store, clock)
        results: dict[str, bool] = {}

        async def enqueue(key: str, scope: anyio.CancelScope) -> None:
            with scope:
                results[key] = await intake.enqueue("f", b"{}", key)

        scopes = {key: anyio.CancelScope() for key in "abc"}
        lock = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the outage
            async with anyio.create_task_group() as tg:
                for key in "abc":  # a writes [a]; then b writes [b, c]
                    tg.start_soon(enqueue, key, scopes[key])
                    await anyio.wait_all_tasks_blocked()
                await clock.advance(10)
                scopes["a"].cancel()  # the writer, waiting out the outage
                await anyio.wait_all_tasks_blocked()
                await clock.advance(10)
                scopes["b"].cancel()  # the next writer, c in its batch
                await anyio.wait_all_tasks_blocked()
                await clock.advance(10)
                lock.execute("ROLLBACK")
                with anyio.fail_after(10):
                    while "c" not in results:
                        await clock.advance(5)
                        await anyio.sleep(0.01)
        finally:
            lock.close()
        # A cancelled caller's event may or may not be queued (its cancellation can land
        # after its write committed, in which case the call completes): what it was told
        # is what the queue holds, and every caller that was not cancelled got its answer.
        assert results.get("c") is True
        assert set(results.values()) == {True}
        assert intake.received == len(results)
        events = await store.lease(now=clock.time(), limit=10, lease_for=30)
        assert sorted(e.idempotency_key for e in events) == sorted(results)
        with anyio.fail_after(10):  # the writer's turn passed on: a later caller writes at once
            assert await intake.enqueue("f", b"{}", "d")
