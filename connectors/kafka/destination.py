"""The ``kafka://TOPIC`` failure destination: one message per discarded record, produced to
a topic on the source's own cluster.

The stream core knows this destination only as a
:class:`~streamfn.streams.contract.StreamDestination` the Kafka source hands it
(:meth:`~connectors.kafka.source.KafkaSource.destination`). Each record's message is AWS's
per-record on-failure shape (:func:`~connectors.kafka.format.kafka_topic_failure_records`),
keyed with the record's key so messages of one key stay in order on the failure topic.
``write`` returns once every message is acknowledged (``acks=all``); a produce the broker
fails raises SourceError (retriable), and the driver writes the batch again later, so a
message may be produced twice, never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec

from streamfn.streams.contract import Failure
from streamfn.types import StreamRecord

from .format import KafkaFormat

ProduceFn = Callable[[str, bytes | None, bytes], Awaitable[None]]
"""``await produce(topic, key, value)``: write one message and wait for its ack."""

_encode = msgspec.json.Encoder().encode


class KafkaTopicDestination:
    """``kafka://topic``, written through ``produce``."""

    __slots__ = ("_format", "_produce", "topic")

    def __init__(self, topic: str, produce: ProduceFn, format: KafkaFormat) -> None:
        self.topic = topic
        self._produce = produce
        self._format = format

    @property
    def uri(self) -> str:
        return f"kafka://{self.topic}"

    async def write(self, records: Sequence[StreamRecord], failure: Failure) -> None:
        messages = self._format.topic_failure_records(records, failure)
        for record, message in zip(records, messages, strict=True):
            await self._produce(self.topic, record.key, _encode(message))
