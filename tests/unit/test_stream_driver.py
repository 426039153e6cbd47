"""The stream mapping driver over an in-memory stream source and a fake clock.

Each test runs a real :class:`StreamMapping` (fetch loop, batch tasks, commit loop) on one
event loop; the source, the function and time are fakes the test controls. ``settle()``
lets every task run until nothing is runnable (no real sleeps); ``advance()`` moves the
fake clock, which wakes the batching window, retry backoffs and the commit loop.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from connectors.kafka.destination import KafkaTopicDestination
from connectors.kafka.format import KafkaFormat, filter_view
from streamfn.errors import ConfigError, DestinationError, SourceError
from streamfn.invoke.destinations import (
    Destination,
    DestinationWriter,
    KafkaDestination,
    parse_destination,
)
from streamfn.streams.batching import BatchPolicy
from streamfn.streams.contract import StreamContext, StreamListener, StreamPosition
from streamfn.streams.driver import StreamMapping, StreamMappingPolicy
from streamfn.streams.retry import StreamRetryPolicy
from streamfn.streams.runner import wait_event
from streamfn.testing import FakeClock as _FakeClock
from streamfn.types import (
    InvocationRequest,
    InvocationResult,
    Outcome,
    Report,
    StreamRecord,
    TimestampType,
    TopicPartition,
)

pytestmark = pytest.mark.anyio

TOPIC = "orders"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
WALL = 1_700_000_000.0
FORMAT = KafkaFormat("fake:9092")


def FakeClock() -> _FakeClock:
    return _FakeClock(start=WALL)


class FakeSource:
    """A stream source over in-memory partitions; records what the driver asks of it."""

    def __init__(self, clock: FakeClock, partitions: Sequence[TopicPartition] = (P0, P1)) -> None:
        self.clock = clock
        self.partitions = list(partitions)
        self.queues: dict[TopicPartition, deque[StreamRecord]] = {}
        self.paused: set[TopicPartition] = set()
        self.ever_paused: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.produced: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.listener: StreamListener | None = None
        self.context: StreamContext | None = None
        self.fetched_from: list[set[TopicPartition] | None] = []
        self.closed = False
        self.fail_commits = False
        self._arrived = anyio.Event()

    def push(self, *records: StreamRecord) -> None:
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self.queues.setdefault(tp, deque()).append(record)
        self._arrived.set()

    async def open(self, listener: StreamListener, context: StreamContext) -> None:
        self.listener, self.context = listener, context
        await listener.assigned({tp: StreamPosition(0, None) for tp in self.partitions})

    async def fetch(
        self,
        max_wait: float,
        max_records: int,
        partitions: Collection[TopicPartition] | None = None,
    ) -> Mapping[TopicPartition, Sequence[StreamRecord]]:
        self.fetched_from.append(None if partitions is None else set(partitions))
        if not self._ready(partitions):
            await wait_event(self.clock, self._arrived, max_wait)
            self._arrived = anyio.Event()
        out: dict[TopicPartition, list[StreamRecord]] = {}
        for tp, queue in self.queues.items():
            if partitions is not None and tp not in partitions:
                continue
            while queue and tp not in self.paused and max_records > 0:
                out.setdefault(tp, []).append(queue.popleft())
                max_records -= 1
        return out

    def _ready(self, partitions: Collection[TopicPartition] | None) -> bool:
        return any(
            q and tp not in self.paused and (partitions is None or tp in partitions)
            for tp, q in self.queues.items()
        )

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        self.paused.update(partitions)
        self.ever_paused.update(partitions)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        self.paused.difference_update(partitions)
        self._arrived.set()

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.fail_commits:
            raise SourceError("rebalanced")
        self.committed.update(offsets)
        self.commits.append(dict(offsets))

    def destination(self, target: Destination) -> KafkaTopicDestination | None:
        if not isinstance(target, KafkaDestination):
            return None
        return KafkaTopicDestination(target.topic, self.produce, FORMAT)

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produced.append((topic, key, json.loads(value)))

    def end_offset(self, partition: TopicPartition) -> int | None:
        return 100 if partition == P0 else None

    async def aclose(self) -> None:
        self.closed = True


Seen = list[tuple[int, int]]  # (partition, offset) of each record of one invocation
Respond = Callable[[Seen], Awaitable[InvocationResult] | InvocationResult]


class FakeFunction:
    """Records every invocation; ``respond`` decides its result (default: success)."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.calls: list[Seen] = []
        self.events: list[dict[str, Any]] = []
        self.respond = respond
        self.running = 0
        self.most_running = 0

    async def __call__(self, request: InvocationRequest) -> InvocationResult:
        event = json.loads(request.payload)
        self.events.append(event)
        seen = [(r["partition"], r["offset"]) for rs in event["records"].values() for r in rs]
        self.calls.append(seen)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            result = self.respond(seen) if self.respond else ok()
            if not isinstance(result, InvocationResult):
                result = await result
        finally:
            self.running -= 1
        return msgspec.structs.replace(result, request_id=request.request_id)

    def offsets(self, partition: int = 0) -> list[int]:
        return [o for call in self.calls for p, o in call if p == partition]


REPORT = Report(duration_ms=1, billed_duration_ms=1, memory_size_mb=128, max_memory_used_mb=1)


def ok(payload: object = None) -> InvocationResult:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return InvocationResult(request_id="", outcome=Outcome.SUCCESS, payload=body, report=REPORT)


def error() -> InvocationResult:
    return InvocationResult(
        request_id="",
        outcome=Outcome.FUNCTION_ERROR,
        payload=b'{"errorMessage": "boom", "errorType": "RuntimeError"}',
        error_type="RuntimeError",
        report=REPORT,
    )


def throttled() -> InvocationResult:
    return InvocationResult(request_id="", outcome=Outcome.THROTTLED, payload=b"{}")


def rec(
    offset: int,
    partition: int = 0,
    *,
    key: bytes | None = None,
    value: bytes | None = b"{}",
    age_s: float = 1.0,
) -> StreamRecord:
    return StreamRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp_ms=int((WALL - age_s) * 1000),
        key=key,
        value=value,
    )


def policy(**changes: Any) -> StreamMappingPolicy:
    batch = changes.pop("batch", {})
    retry = changes.pop("retry", {})
    on_failure = changes.pop("on_failure", None)
    return StreamMappingPolicy(
        function="fn",
        batch=BatchPolicy(**{"batch_size": 10, "window_s": 0.0, **batch}),
        retry=StreamRetryPolicy(**{"has_on_failure_destination": on_failure is not None, **retry}),
        on_failure=parse_destination(on_failure) if on_failure else None,
        **changes,
    )


async def settle() -> None:
    for _ in range(300):
        await anyio.lowlevel.checkpoint()


class Harness:
    def __init__(self, mapping: StreamMapping, source: FakeSource, clock: FakeClock) -> None:
        self.mapping, self.source, self.clock = mapping, source, clock

    async def advance(self, seconds: float, steps: int = 1) -> None:
        for _ in range(steps):
            self.clock.step(seconds / steps)
            await settle()

    async def commit(self) -> dict[TopicPartition, int]:
        await self.advance(0.5)
        return self.source.committed


@asynccontextmanager
async def running(
    function: FakeFunction,
    rules: StreamMappingPolicy | None = None,
    *,
    source: FakeSource | None = None,
    clock: FakeClock | None = None,
    destinations: DestinationWriter | None = None,
) -> AsyncIterator[Harness]:
    clock = clock or FakeClock()
    source = source or FakeSource(clock)
    mapping = StreamMapping(
        name="fn-kafka",
        policy=rules or policy(),
        source=source,
        format=FORMAT,
        invoke=function,
        destinations=destinations,
        function_arn="arn:aws:lambda:local:000000000000:function:fn",
        clock=clock,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(mapping.run)
        await settle()
        harness = Harness(mapping, source, clock)
        yield harness
        mapping.stop()
        for _ in range(40):  # let a drain finish on fake time
            await harness.advance(1)
            if source.closed:
                break
        assert source.closed


# -- batching, order, checkpoints ---------------------------------------------------------------


async def test_batches_in_offset_order_and_commits_reach_the_end() -> None:
    function = FakeFunction()
    async with running(function) as h:
        h.source.push(*(rec(o, 0) for o in range(25)), *(rec(o, 1) for o in range(7)))
        await settle()
        assert function.offsets(0) == list(range(25))
        assert function.offsets(1) == list(range(7))
        assert all(len({p for p, _ in call}) == 1 for call in function.calls)  # one partition
        assert max(len(call) for call in function.calls) == 10
        assert await h.commit() == {P0: 25, P1: 7}
    stats = h.mapping.statistics()
    assert (stats.records_received, stats.records_delivered) == (32, 32)


async def test_batching_window_holds_a_partial_batch_until_it_expires() -> None:
    function = FakeFunction()
    async with running(function, policy(batch={"window_s": 1.0})) as h:
        h.source.push(rec(0), rec(1), rec(2))
        await settle()
        await h.advance(0.9)
        assert function.calls == []
        await h.advance(0.2)
        assert function.calls == [[(0, 0), (0, 1), (0, 2)]]


async def test_a_full_batch_does_not_wait_for_the_window() -> None:
    function = FakeFunction()
    async with running(function, policy(batch={"window_s": 300.0, "batch_size": 5})) as h:
        h.source.push(*(rec(o) for o in range(5)))
        await settle()
        assert function.offsets() == [0, 1, 2, 3, 4]


async def test_the_start_position_of_a_new_partition_is_committed() -> None:
    """LATEST must not move on restart: the start is committed before any record."""
    async with running(FakeFunction()) as h:
        assert await h.commit() == {P0: 0, P1: 0}


async def test_parallelization_factor_runs_lanes_concurrently_in_key_order() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    rules = policy(batch={"parallelization_factor": 3, "batch_size": 2})
    async with running(function, rules) as h:
        keys = [b"a", b"b", b"c", b"d"] * 6
        h.source.push(*(rec(o, key=k) for o, k in enumerate(keys)))
        await settle()
        assert function.running > 1  # several batches of one partition in flight
        gate.set()
        await settle()
        assert function.most_running <= 3
        assert await h.commit() == {P0: 24, P1: 0}
    by_key: dict[bytes, list[int]] = {}
    for event in function.events:
        for record in event["records"]["orders-0"]:
            by_key.setdefault(base64.b64decode(record["key"]), []).append(record["offset"])
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    assert sum(len(v) for v in by_key.values()) == 24


async def test_records_fetched_before_their_assignment_is_announced_are_kept() -> None:
    function = FakeFunction()
    async with running(function, source=FakeSource(FakeClock(), partitions=())) as h:
        h.source.push(rec(0), rec(1))
        await settle()
        assert h.source.listener is not None
        await h.source.listener.assigned({P0: StreamPosition(0, None)})
        h.source.push(rec(2))
        await settle()
        assert function.offsets() == [0, 1, 2]
        assert await h.commit() == {P0: 3}


# -- errors, retries, destinations --------------------------------------------------------------


async def test_a_failing_batch_blocks_only_its_partition_and_the_commit_stops_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    function = FakeFunction(lambda seen: error() if (0, 13) in seen else ok())
    async with running(function) as h:
        h.source.push(*(rec(o, 0) for o in range(30)), *(rec(o, 1) for o in range(30)))
        await settle()
        await h.advance(10, steps=10)
        assert function.offsets(1) == list(range(30))
        assert h.source.committed[P1] == 30
        assert h.source.committed[P0] == 10  # the batch 10..19 keeps failing
        assert 20 not in function.offsets(0)
    retries = [r.message for r in caplog.records if "retry" in r.message]
    assert retries and all("maximum_record_age" in message for message in retries)
    assert h.mapping.statistics().retries >= 3


async def test_poison_record_is_bisected_out_to_a_dir_destination(tmp_path: Path) -> None:
    function = FakeFunction(lambda seen: error() if (0, 5) in seen else ok())
    writer = DestinationWriter(tmp_path, enqueue=_no_enqueue)
    rules = policy(
        retry={"bisect_on_error": True, "maximum_retry_attempts": 2}, on_failure="dir:failed"
    )
    async with running(function, rules, destinations=writer) as h:
        h.source.push(*(rec(o) for o in range(10)))
        await h.advance(10, steps=20)
        await _until(lambda: h.mapping.statistics().records_failed, h)  # written, finished
        assert await h.commit() == {P0: 10, P1: 0}
    [file] = (tmp_path / "failed").glob("*.json")
    failure = json.loads(file.read_text())
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 6  # 3 bisect levels + 3 tries
    assert failure["KafkaBatchInfo"]["batchSize"] == 1
    info = failure["KafkaBatchInfo"]["recordsInfo"]["orders-0"]
    assert (info["firstRecordOffset"], info["lastRecordOffset"]) == ("5", "5")
    assert failure["payload"]["records"]["orders-0"][0]["offset"] == 5
    delivered = {o for call in function.calls if (0, 5) not in call for _, o in call}
    assert delivered == set(range(10)) - {5}
    assert h.mapping.statistics().records_failed == 1


async def test_kafka_destination_gets_one_message_per_record_keyed_like_it() -> None:
    function = FakeFunction(lambda seen: error())
    rules = policy(retry={"maximum_retry_attempts": 0}, on_failure="kafka://orders-dlq")
    async with running(function, rules) as h:
        h.source.push(rec(0, key=b"k0"), rec(1, key=b"k1"))
        await settle()
        assert [(t, k) for t, k, _ in h.source.produced] == [
            ("orders-dlq", b"k0"),
            ("orders-dlq", b"k1"),
        ]
        assert await h.commit() == {P0: 2, P1: 0}
    message = h.source.produced[0][2]
    assert message["requestContext"]["condition"] == "RetriesExhausted"
    assert message["KafkaBatchInfo"]["recordInfo"]["offset"] == "0"


async def test_function_destination_queues_an_async_event() -> None:
    queued: list[tuple[str, dict[str, Any], str]] = []

    async def enqueue(function: str, payload: bytes, key: str) -> bool:
        queued.append((function, json.loads(payload), key))
        return True

    function = FakeFunction(lambda seen: error())
    rules = policy(retry={"maximum_retry_attempts": 0}, on_failure="function:dlq")
    async with running(function, rules, destinations=DestinationWriter(Path("."), enqueue)) as h:
        h.source.push(rec(0))
        await settle()
        await _until(lambda: queued, h)
    [(target, record, key)] = queued
    assert target == "dlq" and key.endswith(":RetryAttemptsExhausted")
    assert record["KafkaBatchInfo"]["recordsInfo"]["orders-0"]["firstRecordOffset"] == "0"


async def test_an_unwritable_destination_holds_the_records_until_it_works(tmp_path: Path) -> None:
    blocked = tmp_path / "failed"
    blocked.write_text("a file where the directory should be")
    function = FakeFunction(lambda seen: error())
    writer = DestinationWriter(tmp_path, enqueue=_no_enqueue)
    rules = policy(retry={"maximum_retry_attempts": 0}, on_failure="dir:failed")
    async with running(function, rules, destinations=writer) as h:
        h.source.push(rec(0))
        await _until(lambda: h.mapping.statistics().destination_errors, h)
        assert await h.commit() == {P0: 0, P1: 0}
        blocked.unlink()
        await h.advance(5)
        # The record is finished once the write returned, a moment after the file appears.
        await _until(lambda: h.mapping.statistics().records_failed, h)
        assert list(blocked.glob("*.json"))
        assert await h.commit() == {P0: 1, P1: 0}


async def test_records_older_than_maximum_record_age_are_not_invoked(tmp_path: Path) -> None:
    function = FakeFunction()
    writer = DestinationWriter(tmp_path, enqueue=_no_enqueue)
    rules = policy(retry={"maximum_record_age_s": 60}, on_failure="dir:failed")
    async with running(function, rules, destinations=writer) as h:
        h.source.push(rec(0, age_s=120), rec(1, age_s=120), rec(2), rec(3, age_s=90), rec(4))
        await _until(lambda: h.mapping.statistics().records_failed == 3, h)  # written, finished
        await settle()
        assert function.offsets() == [2, 4]  # the young records of the same batch still run
        assert await h.commit() == {P0: 5, P1: 0}
    [file] = (tmp_path / "failed").glob("*.json")
    failure = json.loads(file.read_text())
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    assert failure["requestContext"]["approximateInvokeCount"] == 0
    assert [r["offset"] for r in failure["payload"]["records"]["orders-0"]] == [0, 1, 3]


async def test_a_record_too_large_for_any_batch_goes_to_the_destination() -> None:
    function = FakeFunction()
    rules = policy(batch={"max_bytes": 8_000}, on_failure="kafka://orders-dlq")
    async with running(function, rules) as h:
        h.source.push(rec(0), rec(1, value=b"x" * 5_000), rec(2))
        await settle()
        assert function.offsets() == [0, 2]
        [(_, _, message)] = h.source.produced
        assert message["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
        assert await h.commit() == {P0: 3, P1: 0}


async def test_throttles_are_retried_without_counting_as_retries() -> None:
    results = [throttled(), throttled()]
    function = FakeFunction(lambda seen: results.pop(0) if results else ok())
    async with running(function, policy(retry={"maximum_retry_attempts": 0})) as h:
        h.source.push(rec(0))
        await h.advance(5, steps=5)
        assert await h.commit() == {P0: 1, P1: 0}
    stats = h.mapping.statistics()
    assert (stats.retries, stats.throttles, stats.records_failed) == (0, 2, 0)


# -- partial batch responses --------------------------------------------------------------------


def failures(*offsets: int) -> InvocationResult:
    items = [{"itemIdentifier": {"partition": "orders-0", "offset": o}} for o in offsets]
    return ok({"batchItemFailures": items})


async def test_partial_response_commits_below_the_lowest_failure_and_redelivers_from_it() -> None:
    results = [failures(6, 4)]
    function = FakeFunction(lambda seen: results.pop(0) if results else ok())
    rules = policy(retry={"report_batch_item_failures": True})
    async with running(function, rules) as h:
        h.source.push(*(rec(o) for o in range(10)))
        await settle()
        assert await h.commit() == {P0: 4, P1: 0}
        await h.advance(2, steps=2)
        assert function.calls[1] == [(0, o) for o in range(4, 10)]
        assert await h.commit() == {P0: 10, P1: 0}


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": "orders-0:3"}]},
        {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 99}}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
    ],
)
async def test_a_malformed_partial_response_fails_the_whole_batch(response: object) -> None:
    results = [ok(response)]
    function = FakeFunction(lambda seen: results.pop(0) if results else ok())
    rules = policy(retry={"report_batch_item_failures": True})
    async with running(function, rules) as h:
        h.source.push(*(rec(o) for o in range(5)))
        await settle()
        assert await h.commit() == {P0: 0, P1: 0}
        await h.advance(2, steps=2)
        assert function.calls == [[(0, o) for o in range(5)]] * 2
    assert h.mapping.statistics().retries == 1


async def test_a_partial_response_is_ignored_without_report_batch_item_failures() -> None:
    function = FakeFunction(lambda seen: failures(2))
    async with running(function) as h:
        h.source.push(*(rec(o) for o in range(5)))
        await settle()
        assert await h.commit() == {P0: 5, P1: 0}
        assert len(function.calls) == 1


# -- filtering ----------------------------------------------------------------------------------


async def test_filtered_records_are_not_delivered_but_count_as_finished() -> None:
    function = FakeFunction()
    rules = policy(filters=('{"value": {"keep": [true]}}',))
    async with running(function, rules) as h:
        values = [b'{"keep": true}', b'{"keep": false}', b"not json", b'{"keep": true}', None]
        h.source.push(*(rec(o, value=v) for o, v in enumerate(values)))
        await settle()
        await h.advance(0.1)
        assert function.offsets() == [0, 3]
        assert await h.commit() == {P0: 5, P1: 0}
    assert h.mapping.statistics().records_filtered == 3


async def test_filter_view_matches_as_lambda_does() -> None:
    record = StreamRecord(
        topic=TOPIC,
        partition=2,
        offset=7,
        timestamp_ms=1_000,
        timestamp_type=TimestampType.LOG_APPEND_TIME,
        key=b'"k"',
        value=b"\xff not json",
        headers=(("h", b"\x01\xff"),),
    )
    assert filter_view(record) == {
        "topic": TOPIC,
        "partition": 2,
        "offset": 7,
        "timestamp": 1_000,
        "timestampType": "LOG_APPEND_TIME",
        "headers": [{"h": [1, -1]}],
        "key": "k",
    }
    assert filter_view(rec(0, key=b"plain", value=None))["value"] is None
    assert "key" not in filter_view(rec(0, key=b"plain"))


# -- backpressure -------------------------------------------------------------------------------


async def test_a_slow_function_holds_its_partition_and_memory_stays_bounded() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    rules = policy(max_pending=40, fetch_max_records=10)
    async with running(function, rules) as h:
        h.source.push(*(rec(o) for o in range(500)), *(rec(o, 1) for o in range(5)))
        await settle()
        assert h.mapping.statistics().paused_partitions == ("orders-0",)
        assert h.source.fetched_from[-1] == {P1}  # left out of fetches, not paused
        assert h.source.paused == set()
        assert len(h.source.queues[P0]) >= 500 - 40 - 10  # the rest waits at the source
        assert function.offsets(1) == list(range(5))  # the other partition flows
        gate.set()
        await _until(lambda: len(function.offsets()) == 500, h)
        assert h.mapping.statistics().paused_partitions == ()
        assert await h.commit() == {P0: 500, P1: 5}


async def test_when_nothing_may_flow_fetching_stops_and_a_long_stall_pauses() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    rules = policy(max_pending=20, fetch_max_records=10, pause_after=30)
    async with running(function, rules) as h:
        h.source.push(*(rec(o, p) for p in (0, 1) for o in range(100)))
        await settle()
        fetches = len(h.source.fetched_from)
        await h.advance(10, steps=10)
        assert len(h.source.fetched_from) == fetches  # every partition is held: no fetch
        assert h.source.paused == set()  # nor a pause, which would drop prefetched data
        await h.advance(25, steps=25)
        assert h.source.paused == {P0, P1}  # a long stall: paused, and polling again
        assert len(h.source.fetched_from) > fetches
        assert h.source.fetched_from[-1] is None
        gate.set()
        await _until(lambda: len(function.calls) == 20, h)
        assert h.source.paused == set()
        assert await h.commit() == {P0: 100, P1: 100}


async def test_the_byte_budget_stops_fetching_from_every_partition() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    async with running(function, policy(max_pending_bytes=20_000, fetch_max_records=5)) as h:
        h.source.push(*(rec(o, value=b"v" * 1_000) for o in range(100)))
        await settle()
        fetches = len(h.source.fetched_from)
        await h.advance(5, steps=5)
        assert len(h.source.fetched_from) == fetches
        assert len(h.source.queues[P0]) > 70  # the rest waits at the source
        gate.set()
        await _until(lambda: len(function.offsets()) == 100, h)


class FlakyDestinations(DestinationWriter):
    """Delivers nothing while ``failing``; counts what it was given."""

    def __init__(self) -> None:
        super().__init__(Path("."), _no_enqueue)
        self.failing = True
        self.attempts = 0
        self.delivered = 0

    async def deliver(self, destination: Destination, record: dict[str, Any]) -> None:
        self.attempts += 1
        if self.failing:
            raise DestinationError("disk full")
        self.delivered += 1


async def test_oversize_records_waiting_for_their_destination_count_against_the_byte_budget() -> (
    None
):
    """Review C10: an oversize record was charged 0 bytes, so with a failing destination up
    to max_pending of them (per partition) sat in memory."""
    value = b"x" * (7 * 1024 * 1024)  # one buffer shared by every record
    destinations = FlakyDestinations()
    rules = policy(on_failure="dir:failed", max_pending_bytes=32 * 1024 * 1024, fetch_max_records=1)
    async with running(FakeFunction(), rules, destinations=destinations) as h:
        h.source.push(*(rec(o, value=value) for o in range(50)))
        await settle()
        await h.advance(1, steps=4)
        started = destinations.attempts
        assert 3 <= started <= 5  # each one's event would be ~9.3 MB (base64)
        assert len(h.source.queues[P0]) == 50 - started  # the rest waits at the source
        destinations.failing = False
        await h.advance(5)  # the destination retry
        await _until(lambda: destinations.delivered == 50, h)
        assert await h.commit() == {P0: 50, P1: 0}
    assert h.mapping.statistics().records_failed == 50


async def test_the_source_is_opened_with_the_mappings_clock_logger_and_revoke_timeout() -> None:
    clock = FakeClock()
    rules = policy(function_timeout=600.0)
    async with running(FakeFunction(), rules, clock=clock) as h:
        context = h.source.context
        assert context is not None
        assert context.clock is clock
        assert context.log.name == "streamfn.source.fn-kafka"
        assert context.revoke_timeout == 600.0 + rules.revoke_grace


class ToyFormat:
    """A format that is not Kafka's (DynamoDB-like), to show the core has no wire format."""

    def batch_event(self, records: Sequence[StreamRecord]) -> bytes:
        return json.dumps(
            {"Records": [{"eventID": str(r.offset), "seq": r.offset} for r in records]}
        ).encode()

    def batch_item_failures(
        self, payload: bytes, records: Sequence[StreamRecord]
    ) -> dict[TopicPartition, int]:
        failed = [int(f["itemIdentifier"]) for f in json.loads(payload)["batchItemFailures"]]
        return {P0: min(failed)} if failed else {}

    def filter_view(self, record: StreamRecord) -> dict[str, object]:
        return {"dynamodb": {"seq": record.offset}}

    def failure_record(self, records: Sequence[StreamRecord], failure: Any) -> dict[str, Any]:
        return {"toy": [r.offset for r in records], "condition": failure.condition}


async def test_a_stream_with_its_own_format_gets_its_events_filters_and_partial_responses() -> None:
    seen: list[list[int]] = []
    results = [ok({"batchItemFailures": [{"itemIdentifier": "4"}]})]

    async def invoke(request: InvocationRequest) -> InvocationResult:
        seen.append([r["seq"] for r in json.loads(request.payload)["Records"]])
        return results.pop(0) if results else ok({"batchItemFailures": []})

    clock = FakeClock()
    source = FakeSource(clock)
    rules = policy(
        filters=('{"dynamodb": {"seq": [{"numeric": ["<", 8]}]}}',),
        retry={"report_batch_item_failures": True},
    )
    mapping = StreamMapping(
        name="fn-toy",
        policy=rules,
        source=source,
        format=ToyFormat(),
        invoke=invoke,
        destinations=None,
        function_arn="arn",
        clock=clock,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(mapping.run)
        await settle()
        source.push(*(rec(o) for o in range(10)))
        await settle()
        await Harness(mapping, source, clock).advance(2, steps=4)
        assert seen == [list(range(8)), [4, 5, 6, 7]]  # 8, 9 filtered; redelivered from 4
        await Harness(mapping, source, clock).advance(0.5)
        assert source.committed[P0] == 10
        mapping.stop()
        await Harness(mapping, source, clock).advance(1)


async def test_a_failure_destination_nobody_writes_is_a_config_error() -> None:
    clock = FakeClock()
    source = FakeSource(clock)
    source.destination = lambda target: None  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="kafka: destinations are not written by this source"):
        StreamMapping(
            name="fn-kafka",
            policy=policy(on_failure="kafka://orders-dlq"),
            source=source,
            format=FORMAT,
            invoke=FakeFunction(),
            destinations=None,
            function_arn="arn",
            clock=clock,
        )


# -- rebalance and shutdown ---------------------------------------------------------------------


async def test_revoke_lets_in_flight_batches_finish_and_commits_before_returning() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    rules = policy(max_pending=40, batch={"batch_size": 10, "window_s": 1.0})
    async with running(function, rules) as h:
        h.source.push(*(rec(o) for o in range(15)))  # one batch in flight, 5 buffered
        await settle()
        assert h.source.listener is not None
        returned = anyio.Event()

        async def revoke() -> None:
            assert h.source.listener is not None
            await h.source.listener.revoked({P0})
            returned.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(revoke)
            await settle()
            assert not returned.is_set()
            gate.set()
            await settle()
            assert returned.is_set()
        assert h.source.commits[-1] == {P0: 10}
        await h.advance(2)
        assert function.offsets() == list(range(10))  # buffered records were dropped
        # Assigned again: it resumes from the committed offset.
        await h.source.listener.assigned({P0: StreamPosition(10, 10)})
        h.source.push(*(rec(o) for o in range(10, 15)))
        await settle()
        await h.advance(2, steps=2)
        assert function.offsets() == list(range(15))


async def test_revoke_cancels_a_batch_that_outlives_the_function_timeout() -> None:
    never = anyio.Event()

    async def hang(seen: Seen) -> InvocationResult:
        await never.wait()
        return ok()

    function = FakeFunction(hang)
    async with running(function, policy(function_timeout=3, revoke_grace=2)) as h:
        h.source.push(rec(0), rec(1))
        await settle()
        returned = anyio.Event()

        async def revoke() -> None:
            assert h.source.listener is not None
            await h.source.listener.revoked({P0, P1})
            returned.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(revoke)
            await settle()
            await h.advance(4.9)
            assert not returned.is_set()
            await h.advance(0.2)
            assert returned.is_set()
        assert h.source.committed == {P0: 0, P1: 0}


async def test_revoke_abandons_a_retry_backoff_at_once() -> None:
    function = FakeFunction(lambda seen: error())
    async with running(function, policy(retry={"backoff_base_s": 60.0})) as h:
        h.source.push(rec(0))
        await settle()
        assert h.source.listener is not None
        with anyio.fail_after(5):  # real seconds, but no fake time passes
            await h.source.listener.revoked({P0})
        assert len(function.calls) == 1
        assert h.source.committed == {P0: 0}


async def test_stop_drains_in_flight_batches_commits_and_closes() -> None:
    gate = anyio.Event()

    async def slow(seen: Seen) -> InvocationResult:
        await gate.wait()
        return ok()

    function = FakeFunction(slow)
    async with running(function) as h:
        h.source.push(*(rec(o) for o in range(5)))
        await settle()
        h.mapping.stop()
        await settle()
        assert not h.source.closed
        gate.set()
        await settle()
        assert h.source.closed
        assert h.source.committed == {P0: 5, P1: 0}


async def test_a_failed_commit_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    async with running(FakeFunction()) as h:
        h.source.fail_commits = True
        h.source.push(rec(0))
        await h.commit()
        assert h.source.committed == {}
        h.source.fail_commits = False
        assert await h.commit() == {P0: 1, P1: 0}
    assert any("commit failed" in r.message for r in caplog.records)


async def test_a_source_error_comes_out_of_run_unwrapped_and_the_source_is_closed() -> None:
    clock = FakeClock()
    source = FakeSource(clock)

    async def broken(listener: StreamListener, context: StreamContext) -> None:
        raise SourceError("kafka: cannot connect")

    source.open = broken  # type: ignore[method-assign]
    mapping = StreamMapping(
        name="fn-kafka",
        policy=policy(),
        source=source,
        format=FORMAT,
        invoke=FakeFunction(),
        destinations=None,
        function_arn="arn",
        clock=clock,
    )
    with pytest.raises(SourceError, match="cannot connect"):
        await mapping.run()
    assert source.closed


async def test_statistics_report_lag_and_committed_offsets() -> None:
    async with running(FakeFunction()) as h:
        h.source.push(*(rec(o) for o in range(30)))
        await settle()
        await h.commit()
        stats = h.mapping.statistics()
        assert stats.committed == {"orders-0": 30, "orders-1": 0}
        assert stats.offset_lag == {"orders-0": 70}
        assert stats.batches == 3


# -- helpers ------------------------------------------------------------------------------------


async def _no_enqueue(function: str, payload: bytes, key: str) -> bool:
    raise AssertionError("no function: destination here")


async def _until(condition: Callable[[], object], h: Harness) -> None:
    """Let tasks (and worker threads writing files) run until ``condition`` holds."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)
            await h.advance(0.001)
