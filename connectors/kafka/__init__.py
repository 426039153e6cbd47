"""The ``kafka`` connector: Lambda's self-managed Kafka event-source mapping, over aiokafka."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from streamfn.config import SourceConfig
from streamfn.plugins import Connector

from .config import KafkaConfig

if TYPE_CHECKING:
    from streamfn.sources import EventSource


def _create(config: SourceConfig) -> EventSource:
    from .source import KafkaSource

    assert isinstance(config, KafkaConfig)
    # A "stream" connector returns a StreamSource; Connector.create is typed for event
    # sources only, so the engine casts it back (see streamfn.sources).
    return cast("EventSource", KafkaSource(config))


plugin = Connector(name="kafka", config=KafkaConfig, create=_create, kind="stream")
