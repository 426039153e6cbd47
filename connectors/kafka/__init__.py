"""The ``kafka`` connector: Lambda's self-managed Kafka event-source mapping, over aiokafka."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamfn.config import SourceConfig
from streamfn.plugins import Connector

from .config import KafkaConfig

if TYPE_CHECKING:
    from .source import KafkaSource


def _create(config: SourceConfig) -> KafkaSource:
    from .source import KafkaSource

    assert isinstance(config, KafkaConfig)
    return KafkaSource(config)


plugin = Connector(name="kafka", config=KafkaConfig, create=_create, kind="stream")
