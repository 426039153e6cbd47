"""Batch builder: when batches are cut, lanes, ordering, oversize records."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.kafka.format import kafka_event
from streamfn.errors import ConfigError
from streamfn.streams.batching import (
    EVENT_OVERHEAD_BYTES,
    BatchBuilder,
    BatchPolicy,
    Oversize,
    record_event_bytes,
)
from streamfn.types import StreamRecord, TimestampType, TopicPartition

TP0 = TopicPartition("orders", 0)


def rec(
    offset: int,
    *,
    partition: int = 0,
    key: bytes | None = None,
    value: bytes | None = b"v",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> StreamRecord:
    return StreamRecord(
        topic="orders",
        partition=partition,
        offset=offset,
        timestamp_ms=1_700_000_000_000 + offset,
        key=key,
        value=value,
        headers=headers,
    )


def offsets(batch_records: tuple[StreamRecord, ...]) -> list[int]:
    return [r.offset for r in batch_records]


def test_batch_size_triggers_before_the_window() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=3, window_s=10))
    for i in range(7):
        assert builder.add(rec(i), now=0.0) is None
    (batch,) = builder.ready(now=0.0)
    assert offsets(batch.records) == [0, 1, 2]
    assert batch.tp == TP0 and batch.lane == 0
    assert builder.buffered_count == 4
    assert builder.ready(now=0.0) == []  # the lane is in flight
    builder.done(batch)
    (batch,) = builder.ready(now=0.0)
    assert offsets(batch.records) == [3, 4, 5]
    builder.done(batch)
    assert builder.ready(now=9.9) == []  # one record left, window not over
    (batch,) = builder.ready(now=10.0)
    assert offsets(batch.records) == [6]


def test_window_starts_when_the_first_record_arrives() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=100, window_s=0.5))
    assert builder.next_deadline() is None
    builder.add(rec(0), now=10.0)
    builder.add(rec(1), now=10.3)
    assert builder.next_deadline() == 10.5
    assert builder.ready(now=10.49) == []
    (batch,) = builder.ready(now=10.5)
    assert offsets(batch.records) == [0, 1]
    assert builder.next_deadline() is None


def test_window_of_the_next_batch_counts_from_its_own_first_record() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=2, window_s=1.0))
    builder.add(rec(0), now=0.0)
    builder.add(rec(1), now=0.1)
    builder.add(rec(2), now=0.7)  # waits behind the in-flight batch
    (first,) = builder.ready(now=0.1)
    assert builder.next_deadline() is None  # its lane is busy
    builder.done(first)
    assert builder.next_deadline() == pytest.approx(1.7)
    assert builder.ready(now=1.6) == []
    assert offsets(builder.ready(now=1.7)[0].records) == [2]


def test_zero_window_sends_what_is_buffered_at_once() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=10, window_s=0))
    builder.add(rec(0), now=5.0)
    (batch,) = builder.ready(now=5.0)
    assert offsets(batch.records) == [0]


def test_bytes_trigger_cuts_before_the_record_that_does_not_fit() -> None:
    one = record_event_bytes(rec(0, value=b"x" * 3000))
    policy = BatchPolicy(batch_size=100, window_s=300, max_bytes=EVENT_OVERHEAD_BYTES + 3 * one)
    builder = BatchBuilder(policy)
    for i in range(2):
        builder.add(rec(i, value=b"x" * 3000), now=0.0)
    assert builder.ready(now=0.0) == []  # two fit, a third could still come
    assert builder.next_deadline() == 300
    for i in range(2, 5):
        builder.add(rec(i, value=b"x" * 3000), now=0.0)
    assert builder.next_deadline() == 0.0  # full: due now
    (batch,) = builder.ready(now=0.0)
    assert offsets(batch.records) == [0, 1, 2]
    assert batch.payload_bytes == EVENT_OVERHEAD_BYTES + 3 * one
    assert builder.buffered_bytes == 2 * one


def test_estimate_bounds_the_encoded_event() -> None:
    records = [
        rec(i, key=b"key-%d" % i, value=bytes(range(256)) * 3, headers=(("h", b"\x80\xff\x00"),))
        for i in range(50)
    ]
    records.append(rec(50, value=None))
    records.append(
        StreamRecord(
            topic="t" * 249,
            partition=2**31 - 1,
            offset=2**63 - 1,
            timestamp_ms=-(2**63),
            timestamp_type=TimestampType.LOG_APPEND_TIME,
            key=b"",
            value=b"",
            headers=(("nämé", b"\x80" * 7),),
        )
    )
    for r in records:
        assert len(kafka_event([r], "x" * 3000)) <= EVENT_OVERHEAD_BYTES + record_event_bytes(r)
    builder = BatchBuilder(BatchPolicy(batch_size=10_000, window_s=0))
    for r in records[:51]:
        builder.add(r, now=0.0)
    (batch,) = builder.ready(now=0.0)
    assert len(kafka_event(batch.records, "x" * 3000)) <= batch.payload_bytes


def test_oversize_record_is_reported_not_buffered() -> None:
    policy = BatchPolicy(max_bytes=EVENT_OVERHEAD_BYTES + 1000, window_s=0)
    builder = BatchBuilder(policy)
    builder.add(rec(0), now=0.0)
    big = rec(1, value=b"x" * 2000)
    oversize = builder.add(big, now=0.0)
    assert isinstance(oversize, Oversize)
    assert oversize.record is big
    assert oversize.payload_bytes > policy.max_bytes
    assert builder.buffered_count == 1
    (batch,) = builder.ready(now=0.0)
    assert offsets(batch.records) == [0]


def test_default_cap_is_six_mebibytes() -> None:
    builder = BatchBuilder(BatchPolicy())
    assert builder.add(rec(0, value=b"x" * (4 * 1024 * 1024)), now=0.0) is None
    assert isinstance(builder.add(rec(1, value=b"x" * (5 * 1024 * 1024)), now=0.0), Oversize)


def test_partitions_are_never_mixed_and_run_in_parallel() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=10, window_s=0))
    for i in range(4):
        builder.add(rec(i, partition=i % 2), now=0.0)
    batches = builder.ready(now=0.0)
    assert {b.tp.partition: offsets(b.records) for b in batches} == {0: [0, 2], 1: [1, 3]}


def test_lanes_keep_per_key_order_and_one_batch_in_flight_each() -> None:
    policy = BatchPolicy(batch_size=2, window_s=0, parallelization_factor=4)
    builder = BatchBuilder(policy)
    keys = [b"k%d" % (i % 6) for i in range(60)]
    for i, key in enumerate(keys):
        builder.add(rec(i, key=key), now=0.0)
    assert {policy.lane_of(rec(0, key=k)) for k in keys} == {0, 1, 2, 3}  # the keys spread
    seen: dict[bytes, list[int]] = {}
    while builder.buffered_count:
        batches = builder.ready(now=0.0)
        lanes = [b.lane for b in batches]
        assert len(lanes) == len(set(lanes)) and len(lanes) <= 4
        assert builder.ready(now=0.0) == []  # every lane with records is busy
        for batch in batches:
            assert {policy.lane_of(r) for r in batch.records} == {batch.lane}
            for r in batch.records:
                assert r.key is not None
                seen.setdefault(r.key, []).append(r.offset)
            builder.done(batch)
    for key, got in seen.items():
        assert got == sorted(got) == [i for i, k in enumerate(keys) if k == key]


def test_null_keys_go_to_lane_zero_in_order() -> None:
    policy = BatchPolicy(batch_size=100, window_s=0, parallelization_factor=4)
    builder = BatchBuilder(policy)
    for i in range(5):
        builder.add(rec(i), now=0.0)
    (batch,) = builder.ready(now=0.0)
    assert batch.lane == 0 and offsets(batch.records) == [0, 1, 2, 3, 4]


def test_lane_hash_is_stable() -> None:
    policy = BatchPolicy(parallelization_factor=10)
    assert policy.lane_of(rec(0, key=b"customer-42")) == 5  # crc32, same in every process


def test_drop_partition_forgets_buffer_and_ignores_late_calls() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=2, window_s=0))
    for i in range(5):
        builder.add(rec(i), now=0.0)
    builder.add(rec(0, partition=1), now=0.0)
    in_flight = next(b for b in builder.ready(now=0.0) if b.tp == TP0)
    assert builder.drop_partition(TP0) == 3
    assert builder.buffered_count == 0 and builder.buffered_bytes == 0
    builder.done(in_flight)  # late: ignored
    assert builder.buffered_count == 0
    builder.add(rec(5), now=1.0)  # assigned again later
    (batch,) = builder.ready(now=1.0)
    assert offsets(batch.records) == [5]


def test_done_on_an_empty_lane_frees_it() -> None:
    builder = BatchBuilder(BatchPolicy(batch_size=2, window_s=0))
    builder.add(rec(0), now=0.0)
    (batch,) = builder.ready(now=0.0)
    builder.done(batch)
    assert builder.next_deadline() is None and builder.ready(now=9.0) == []
    builder.add(rec(1), now=9.0)
    assert builder.ready(now=9.0)[0].id != batch.id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 10_001),
        ("window_s", -1),
        ("window_s", 301),
        ("parallelization_factor", 11),
        ("max_bytes", 6 * 1024 * 1024 + 1),
    ],
)
def test_policy_rejects_out_of_range_values(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=field):
        BatchPolicy(**kwargs)
