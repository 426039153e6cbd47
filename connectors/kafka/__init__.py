"""The ``kafka`` connector: Lambda's self-managed Kafka event-source mapping, over aiokafka.

``config.py`` (``type = "kafka"``), ``source.py`` (the consumer: I/O only), ``format.py``
(the event, partial responses, filter view and failure records: Lambda's shapes),
``destination.py`` (``kafka://TOPIC``), ``embedded.py`` and ``services.py`` (the Tansu
broker of ``streamfn run --embedded-kafka``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamfn.config import SourceConfig
from streamfn.plugins import Connector

from .config import KafkaConfig
from .format import KafkaFormat
from .services import EmbeddedBroker

if TYPE_CHECKING:
    from .source import KafkaSource


def _create(config: SourceConfig) -> KafkaSource:
    from .source import KafkaSource

    assert isinstance(config, KafkaConfig)
    return KafkaSource(config)


def _format(config: SourceConfig) -> KafkaFormat:
    assert isinstance(config, KafkaConfig)
    return KafkaFormat(config.bootstrap_servers)


plugin = Connector(
    name="kafka",
    config=KafkaConfig,
    create=_create,
    kind="stream",
    format=_format,
    embedded=EmbeddedBroker(),
)
