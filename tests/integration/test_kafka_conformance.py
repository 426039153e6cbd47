"""The Kafka source passes the stream-source conformance suite against the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import anyio
import pytest
from kafka_broker import aproduce

from connectors.kafka.config import KafkaConfig
from connectors.kafka.embedded import EmbeddedKafka
from connectors.kafka.source import KafkaSource
from streamfn.testing.streams import check_stream_source
from streamfn.types import TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_the_kafka_source_conforms(
    kafka_broker: EmbeddedKafka, new_topic: Callable[..., str]
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = new_topic(2)
    config = KafkaConfig(
        function="conformance",
        bootstrap_servers=servers,
        topic=topic,
        consumer_group_id=f"conformance-{uuid.uuid4().hex[:8]}",
        session_timeout=6.0,  # a join takes about half of it on Tansu
        heartbeat_interval=1.0,
    )

    async def append(tp: TopicPartition, values: Sequence[bytes]) -> None:
        await aproduce(servers, topic, [(None, v, ()) for v in values], partition=tp.partition)

    with anyio.fail_after(150):
        await check_stream_source(
            lambda: KafkaSource(config),
            append=append,
            partitions=[TopicPartition(topic, 0), TopicPartition(topic, 1)],
        )
