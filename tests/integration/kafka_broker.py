"""Kafka fixtures for integration tests: one embedded Tansu broker per session, a fresh topic
per test, and small sync helpers to produce records and read committed offsets.

Registered by ``tests/integration/conftest.py`` importing the fixtures (pytest puts this
directory on ``sys.path`` before importing that conftest). Test modules import the helpers
directly: ``from kafka_broker import produce, committed_offsets``. The sync helpers work from
sync and async tests alike (inside a running loop they run on a helper thread, blocking the
test briefly); async tests may await ``aproduce`` / ``acommitted_offsets`` instead.

Tansu 0.6.0 quirks these helpers work around (DESIGN.md): take end offsets from producer acks
(``produce`` returns them), and always name partitions when reading committed offsets.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connectors.kafka.embedded import EmbeddedKafka, create_topic

__all__ = [
    "GROUP_TIMEOUTS",
    "Headers",
    "ProducerRecord",
    "acommitted_offsets",
    "aproduce",
    "committed_offsets",
    "end_offsets",
    "kafka_broker",
    "new_topic",
    "produce",
]

Headers = Sequence[tuple[str, bytes]]
ProducerRecord = tuple[bytes | None, bytes | None, Headers]
T = TypeVar("T")

# Consumer settings that keep group joins quick on Tansu (a join takes about half the session
# timeout there). Spread into AIOKafkaConsumer(...).
GROUP_TIMEOUTS: dict[str, int] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "rebalance_timeout_ms": 6000,
}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """The session's running broker; its log is kept under pytest's basetemp."""
    log_path: Path = tmp_path_factory.mktemp("kafka") / "tansu.log"
    with EmbeddedKafka(log_path=log_path) as broker:
        yield broker


@pytest.fixture
def new_topic(kafka_broker: EmbeddedKafka, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``new_topic(partitions=4) -> name``: create a topic no other test uses."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]

    def make(partitions: int = 4) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        _run(lambda: create_topic(kafka_broker.bootstrap_servers, name, partitions))
        return name

    return make


async def aproduce(
    bootstrap: str,
    topic: str,
    records: Sequence[ProducerRecord],
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Send ``(key, value, headers)`` records in order; return each one's (partition, offset).

    With ``partition=None`` the producer's default partitioner picks (by key hash; keyless
    records are spread). Every record is acknowledged before this returns.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value=value, key=key, partition=partition, headers=list(headers)
            )
            for key, value, headers in records
        ]
        acks = [await future for future in futures]
    finally:
        await producer.stop()
    return [(ack.partition, ack.offset) for ack in acks]


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[ProducerRecord],
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """:func:`aproduce` for sync code."""
    return _run(lambda: aproduce(bootstrap, topic, records, partition))


def end_offsets(acks: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the last acknowledged record (Tansu's ListOffsets may
    under-report, so tests derive ends from ``produce``'s acks instead)."""
    ends: dict[int, int] = {}
    for partition, offset in acks:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


async def acommitted_offsets(
    bootstrap: str, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The group's committed offset per named partition; partitions without one are omitted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, p) for p in partitions]
        )
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """:func:`acommitted_offsets` for sync code."""
    return _run(lambda: acommitted_offsets(bootstrap, group, topic, partitions))


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even under a running event loop."""

    async def call() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, call()).result()
