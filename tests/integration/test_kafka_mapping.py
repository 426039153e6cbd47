"""The Kafka event-source mapping, end to end: one real `streamfn run` process on the embedded
broker runs one mapping per behaviour (each on its own topic and consumer group, so they join
the group together and the module pays for one join).

The records are produced before the service starts (TRIM_HORIZON reads them all); each test
then waits for what its mapping should have done, and checks the group's committed offsets
against the producer's acks (Tansu's end offsets can under-report).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Service, wait_for
from kafka_broker import committed_offsets, end_offsets, produce
from kafka_pipeline import (
    Pipeline,
    consume_all,
    create_topics,
    group,
    offsets_by_partition,
    produce_at,
)

from connectors.kafka.embedded import EmbeddedKafka

pytestmark = pytest.mark.integration

BYKEY = """
import time
from recorder import seen, write


def handler(event, context):
    started = time.time()
    time.sleep(0.02)
    write("bykey", {"records": seen(event), "t0": started, "t1": time.time()})
"""

POISON = """
from recorder import seen, write


def handler(event, context):
    records = seen(event)
    if any('"poison"' in r[3] for r in records):
        raise ValueError("poison record")
    write("poison", {"records": records})
"""

PARTIAL = """
from recorder import records, value, write

FAILED_ONCE = set()
MALFORMED_ONCE = set()


def handler(event, context):
    first = {}
    for name, record in records(event):
        first.setdefault(name, record["offset"])
    done, failures, stopped = [], [], set()
    for name, record in records(event):
        if name in stopped:
            continue
        text, where = value(record), (name, record["offset"])
        if "malformed" in text and where not in MALFORMED_ONCE:
            MALFORMED_ONCE.add(where)
            write("partial", {"first": first, "response": "malformed"})
            return {"batchItemFailures": [{"itemIdentifier": f"{name}:{record['offset']}"}]}
        if "fail" in text and where not in FAILED_ONCE:
            FAILED_ONCE.add(where)
            failures.append({"itemIdentifier": {"partition": name, "offset": record["offset"]}})
            stopped.add(name)  # the rest of this partition is redelivered anyway
            continue
        done.append([record["partition"], record["offset"], None, text])
    write("partial", {"records": done, "first": first, "failed": len(failures)})
    return {"batchItemFailures": failures}
"""

POWERTOOLS = """
import json

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEvent
from recorder import write

processor = BatchProcessor(event_type=EventType.Kafka)


def record_handler(record):
    order = record.json_value
    if order.get("bad"):
        raise ValueError("cannot process this order")
    key = record.decoded_key.decode() if record.decoded_key is not None else None
    write("powertools", {
        "records": [[record.partition, record.offset, key, json.dumps(order)]],
        "topic": record.topic,
        "headers": {k: v.decode() for k, v in record.decoded_headers.items()},
        "timestamp_type": record.timestamp_type,
    })


def handler(event, context):
    parsed = KafkaEvent(event)
    write("powertools_event", {
        "source": parsed.event_source,
        "servers": parsed.decoded_bootstrap_servers,
        "count": len(list(parsed.records)),
    })
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
"""


class Scenario:
    """The module's pipeline, its topics and what was produced to each."""

    def __init__(self, pipeline: Pipeline, broker: EmbeddedKafka) -> None:
        self.pipeline = pipeline
        self.servers = broker.bootstrap_servers
        suffix = uuid.uuid4().hex[:6]
        self.topics = {name: f"{name}-{suffix}" for name in self.PARTITIONS}
        self.acks: dict[str, list[tuple[int, int]]] = {}
        self.produced: dict[str, list[Any]] = {}

    PARTITIONS = {
        "ordered": 3,
        "bykey": 2,
        "poison": 2,
        "partial": 1,
        "aged": 1,
        "aged-dlq": 1,
        "filtered": 2,
        "powertools": 1,
    }

    def committed(self, name: str) -> dict[int, int]:
        partitions = range(self.PARTITIONS[name])
        return committed_offsets(self.servers, group(name), self.topics[name], list(partitions))

    def wait_committed(self, name: str, timeout: float = 60) -> None:
        ends = end_offsets(self.acks[name])
        wait_for(
            lambda: self.committed(name) == ends,
            timeout=timeout,
            message=f"{name}: committed offsets to reach {ends}",
        )


@pytest.fixture(scope="module", params=["inline", "python"])
def scenario(
    request: pytest.FixtureRequest,
    kafka_broker: EmbeddedKafka,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    """One service running every mapping of this module, once per runtime: both must pass."""
    pipeline = Pipeline(
        tmp_path_factory.mktemp("kafka-mapping"),
        kafka_broker.bootstrap_servers,
        runtime=request.param,
    )
    s = Scenario(pipeline, kafka_broker)
    create_topics(s.servers, *((s.topics[n], p) for n, p in Scenario.PARTITIONS.items()))
    t = s.topics

    pipeline.function("ordered")
    pipeline.kafka("ordered", t["ordered"], batch_size=100)
    pipeline.function("bykey", BYKEY)
    pipeline.kafka("bykey", t["bykey"], batch_size=20, parallelization_factor=4)
    pipeline.function("poison", POISON)
    pipeline.kafka(
        "poison",
        t["poison"],
        batch_size=100,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=2,
        on_failure="dir:failed-poison",
    )
    pipeline.function("partial", PARTIAL)
    pipeline.kafka(
        "partial", t["partial"], batch_size=100, function_response_types=["ReportBatchItemFailures"]
    )
    pipeline.function("aged")
    pipeline.kafka("aged", t["aged"], maximum_record_age=60, on_failure=f"kafka://{t['aged-dlq']}")
    pipeline.function("filtered")
    pipeline.kafka(
        "filtered", t["filtered"], batch_size=500, filters=['{"value": {"keep": [true]}}']
    )
    pipeline.function("powertools", POWERTOOLS)
    pipeline.kafka(
        "powertools",
        t["powertools"],
        function_response_types=["ReportBatchItemFailures"],
        maximum_retry_attempts=1,
        on_failure="dir:failed-powertools",
    )
    pipeline.write()

    def send(name: str, records: list[tuple[bytes | None, bytes | None, Any]]) -> None:
        s.produced[name] = records
        s.acks[name] = produce(s.servers, t[name], records)

    send("ordered", [(b"k%d" % (i % 30), b"%d" % i, ()) for i in range(3_000)])
    send(
        "bykey",
        [(b"key%d" % (i % 40), json.dumps({"seq": i // 40}).encode(), ()) for i in range(2_000)],
    )
    poison = [json.dumps({"n": i}).encode() for i in range(10_000)]
    poison[4_321] = json.dumps({"n": 4_321, "poison": True}).encode()
    send("poison", [(None, value, ()) for value in poison])
    partial = [f"order {i}" for i in range(300)]
    partial[50], partial[170], partial[120] = "fail 50", "fail 170", "malformed 120"
    send("partial", [(None, text.encode(), ()) for text in partial])
    old = int((time.time() - 120) * 1000)
    s.acks["aged"] = produce_at(s.servers, t["aged"], [b"old %d" % i for i in range(20)], old)
    s.acks["aged"] += produce(
        s.servers, t["aged"], [(None, b"fresh %d" % i, ()) for i in range(10)]
    )
    send(
        "filtered",
        [(None, json.dumps({"n": i, "keep": i % 2 == 0}).encode(), ()) for i in range(10_000)],
    )
    orders = [{"order": i, "bad": i == 7} for i in range(20)]
    send(
        "powertools",
        [
            (
                None if i % 5 == 0 else b"customer-%d" % (i % 3),
                json.dumps(order).encode(),
                [("traceparent", b"00-%d" % i)],
            )
            for i, order in enumerate(orders)
        ],
    )

    service = Service(pipeline.config).start()
    try:
        service.wait_started()
        yield s
    finally:
        assert service.terminate() == 0, service.stderr
        service.close()


def test_records_of_a_partition_arrive_in_offset_order_and_all_are_committed(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("ordered")
    delivered = scenario.pipeline.delivered("ordered")
    by_partition = offsets_by_partition(delivered)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)
    got = {(r.partition, r.offset) for r in delivered}
    assert got == set(scenario.acks["ordered"])  # every produced record, at least once
    calls = scenario.pipeline.calls("ordered")
    assert all(len({r.partition for r in call.records}) == 1 for call in calls)
    assert max(len(call.records) for call in calls) <= 100


def test_with_parallelization_factor_4_records_of_a_key_stay_in_order(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("bykey")
    calls = scenario.pipeline.calls("bykey")
    sequences: dict[str, list[int]] = {}
    for call in calls:  # in the order the invocations ended
        for record in call.records:
            assert record.key is not None and record.value is not None
            sequences.setdefault(record.key, []).append(json.loads(record.value)["seq"])
    assert len(sequences) == 40
    for seqs in sequences.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == 50
    # Several batches of one partition ran at the same time.
    overlapping = any(
        a is not b
        and a.records[0].partition == b.records[0].partition
        and a.extra["t0"] < b.extra["t1"]
        and b.extra["t0"] < a.extra["t1"]
        for a in calls
        for b in calls
    )
    assert overlapping


def test_a_poison_record_is_bisected_out_and_the_partition_continues(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("poison", timeout=90)
    [failure] = scenario.pipeline.failure_records("failed-poison")
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    [(partition, offset)] = [
        ack
        for ack, (_, value, _) in zip(
            scenario.acks["poison"], scenario.produced["poison"], strict=True
        )
        if b"poison" in (value or b"")
    ]
    info = failure["KafkaBatchInfo"]["recordsInfo"]
    assert info == {
        f"{scenario.topics['poison']}-{partition}": {
            "firstRecordOffset": str(offset),
            "lastRecordOffset": str(offset),
            "firstRecordTimestamp": info[f"{scenario.topics['poison']}-{partition}"][
                "firstRecordTimestamp"
            ],
            "lastRecordTimestamp": info[f"{scenario.topics['poison']}-{partition}"][
                "lastRecordTimestamp"
            ],
        }
    }
    assert failure["KafkaBatchInfo"]["batchSize"] == 1
    delivered = {(r.partition, r.offset) for r in scenario.pipeline.delivered("poison")}
    assert delivered == set(scenario.acks["poison"]) - {(partition, offset)}
    assert any(p == partition and o > offset for p, o in delivered)  # it continued


def test_partial_batch_responses_commit_and_redeliver_from_the_lowest_failure(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("partial", timeout=60)
    calls = scenario.pipeline.calls("partial")
    name = f"{scenario.topics['partial']}-0"
    done = {r.offset for call in calls for r in call.records}
    assert done == set(range(300))
    # A reported failure: the next invocation starts at the failed record.
    for call, following in itertools.pairwise(calls):
        if call.extra.get("failed"):
            assert following.extra["first"][name] == max(r.offset for r in call.records) + 1
    assert sum(1 for call in calls if call.extra.get("failed")) == 2
    # A malformed response fails the whole batch: the same records come again.
    [malformed] = [i for i, call in enumerate(calls) if call.extra.get("response") == "malformed"]
    assert calls[malformed + 1].extra["first"] == calls[malformed].extra["first"]


def test_records_older_than_maximum_record_age_go_to_the_kafka_destination(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("aged")
    delivered = scenario.pipeline.delivered("aged")
    assert sorted(r.value or "" for r in delivered) == sorted(f"fresh {i}" for i in range(10))
    messages = consume_all(scenario.servers, scenario.topics["aged-dlq"], 1, 20)
    failures = [json.loads(m.value) for m in messages]
    assert {f["requestContext"]["condition"] for f in failures} == {"RecordAgeExceeded"}
    assert sorted(int(f["KafkaBatchInfo"]["recordInfo"]["offset"]) for f in failures) == list(
        range(20)
    )
    payload = failures[0]["payload"]["records"]
    assert list(payload) == [f"{scenario.topics['aged']}-0"]


def test_filtered_out_records_are_not_delivered_but_their_offsets_are_committed(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("filtered")
    delivered = scenario.pipeline.delivered("filtered")
    values = [json.loads(r.value or "") for r in delivered]
    assert all(v["keep"] for v in values)
    assert sorted(v["n"] for v in values) == list(range(0, 10_000, 2))


def test_powertools_parses_the_events_and_its_partial_failures_are_honoured(
    scenario: Scenario,
) -> None:
    scenario.wait_committed("powertools")
    events = [call.extra for call in scenario.pipeline.calls("powertools_event")]
    assert {e["source"] for e in events} == {"SelfManagedKafka"}
    assert {tuple(e["servers"]) for e in events} == {(scenario.servers,)}
    calls = scenario.pipeline.calls("powertools")
    processed = {json.loads(call.records[0].value or "")["order"]: call for call in calls}
    assert set(processed) == set(range(20)) - {7}
    for order, call in processed.items():
        record = call.records[0]
        assert record.key == (None if order % 5 == 0 else f"customer-{order % 3}")
        assert call.extra["headers"] == {"traceparent": f"00-{order}"}
        assert call.extra["topic"] == scenario.topics["powertools"]
        assert call.extra["timestamp_type"] == "CREATE_TIME"
    [failure] = scenario.pipeline.failure_records("failed-powertools")
    info = failure["KafkaBatchInfo"]["recordsInfo"][f"{scenario.topics['powertools']}-0"]
    assert info["firstRecordOffset"] == "7"  # the partial response named exactly that record
    assert failure["payload"]["records"][f"{scenario.topics['powertools']}-0"][0]["offset"] == 7
