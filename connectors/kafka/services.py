"""``streamfn run --embedded-kafka``: the Kafka connector's embedded services.

The CLI knows no broker: it asks every connector of the config for its
:class:`~streamfn.plugins.EmbeddedServices`. Kafka's are one Tansu broker
(:mod:`connectors.kafka.embedded`) for the sources whose ``bootstrap_servers`` is
``"embedded"``: :meth:`EmbeddedBroker.open` starts it, creates their topics (and those of
their ``kafka://`` failure destinations) with :data:`PARTITIONS` partitions each, and
yields the sources pointed at it. Functions find the broker in the environment variable
``STREAMFN_EMBEDDED_KAFKA`` (``host:port``), set for the rest of the process: worker
processes inherit it (``inherit_environment``), as the quickstart's producer needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import msgspec

from streamfn.config import SourceConfig
from streamfn.invoke.destinations import KafkaDestination, parse_destination

from .config import EMBEDDED, KafkaConfig

__all__ = ["ENVIRONMENT", "PARTITIONS", "EmbeddedBroker"]

ENVIRONMENT = "STREAMFN_EMBEDDED_KAFKA"
PARTITIONS = 3  # of each topic created on the embedded broker


class EmbeddedBroker:
    """The Kafka connector's :class:`~streamfn.plugins.EmbeddedServices`."""

    def needed(self, sources: Sequence[SourceConfig]) -> str | None:
        if any(_embedded(source) for source in sources):
            return f'bootstrap_servers = "{EMBEDDED}"'
        return None

    @asynccontextmanager
    async def open(
        self, sources: Sequence[SourceConfig], log: logging.Logger
    ) -> AsyncIterator[Sequence[SourceConfig]]:
        from .embedded import create_topic, open_embedded_kafka

        topics = sorted({topic for source in sources for topic in topics_of(source)})
        async with open_embedded_kafka() as broker:
            servers = broker.bootstrap_servers
            for topic in topics:
                await create_topic(servers, topic, PARTITIONS, exist_ok=True)
            os.environ[ENVIRONMENT] = servers
            log.info(
                "embedded Kafka broker at %s (memory storage; topics: %s)",
                servers,
                ", ".join(topics) or "none yet",
            )
            yield tuple(
                msgspec.structs.replace(source, bootstrap_servers=servers)
                if _embedded(source)
                else source
                for source in sources
            )


def topics_of(source: SourceConfig) -> tuple[str, ...]:
    """The topics ``source`` needs on the embedded broker; empty when it does not use it."""
    if not _embedded(source):
        return ()
    assert isinstance(source, KafkaConfig)
    topics = [source.topic]
    if source.on_failure is not None:
        destination = parse_destination(source.on_failure)
        if isinstance(destination, KafkaDestination):
            topics.append(destination.topic)
    return tuple(topics)


def _embedded(source: SourceConfig) -> bool:
    return isinstance(source, KafkaConfig) and source.bootstrap_servers == EMBEDDED
