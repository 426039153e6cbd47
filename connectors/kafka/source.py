"""The Kafka source's I/O: an aiokafka consumer group member and, for ``kafka://`` failure
destinations (:mod:`connectors.kafka.destination`), a producer on the same cluster.

Everything the mapping decides (what to commit and when, which partitions to pause) comes
from the driver, :mod:`streamfn.streams.driver`; this module translates between it and
aiokafka. The consumer never commits on its own (``enable_auto_commit=False``).

Partition changes reach the driver through aiokafka's rebalance listener, which aiokafka
awaits inside its group protocol: ``revoked`` returns only after the driver has drained and
committed, so the next owner starts exactly after what was finished here. On assignment
the listener reads each partition's committed offset (naming the partition, which some
brokers need) and resolves its position, so the driver knows where fetching starts; records
a fetch returns for a partition before that is done are given back (a seek to the first of
them) and fetched again afterwards. Where a new partition starts:

- with a committed offset, there (the starting position is ignored, as on AWS);
- else TRIM_HORIZON / LATEST through ``auto_offset_reset``; the driver commits that start
  at once, so a LATEST start is not moved by a restart;
- else AT_TIMESTAMP: seek to ``offsets_for_times`` and also skip fetched records older than
  the timestamp until the first one that is not, so a broker whose time index is coarse
  (Tansu answers offset 0) still starts at the right record. Nothing is committed for such
  a partition before its first delivered record.

The driver's :class:`~streamfn.streams.contract.StreamContext` gives the source its logger
and clock (an idle fetch waits on it), and how long a revoke may drain: the group's
``rebalance_timeout_ms`` is derived from it (:func:`~connectors.kafka.config.
rebalance_timeout_ms`), so the group never hands on partitions whose batches still run.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.helpers import create_ssl_context

from streamfn.clock import Clock, SystemClock
from streamfn.errors import SourceError
from streamfn.invoke.destinations import Destination, KafkaDestination
from streamfn.streams.contract import StreamContext, StreamListener, StreamPosition
from streamfn.types import StreamRecord, TimestampType, TopicPartition

from .config import EMBEDDED, KafkaConfig
from .destination import KafkaTopicDestination
from .format import KafkaFormat

_CREATE_TIME = TimestampType.CREATE_TIME
_LOG_APPEND_TIME = TimestampType.LOG_APPEND_TIME


class KafkaSource:
    """One consumer-group member reading ``config.topic``; see the module docstring."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ssl: ssl.SSLContext | None = None
        self._skip_before: dict[KafkaPartition, int] = {}  # AT_TIMESTAMP: ms per partition
        self._started: set[KafkaPartition] = set()  # assigned, and the driver knows where from
        self._failure: SourceError | None = None
        self._log = logging.getLogger("streamfn.source.kafka")  # until open() names it
        self._clock: Clock = SystemClock()

    async def open(self, listener: StreamListener, context: StreamContext) -> None:
        config = self._config
        self._log, self._clock = context.log, context.clock
        if config.bootstrap_servers == EMBEDDED:
            raise SourceError(
                f'kafka topic {config.topic!r}: bootstrap_servers = "embedded" needs '
                "`streamfn run --embedded-kafka`"
            )
        if config.uses_tls:
            self._ssl = _ssl_context(config)
        consumer = AIOKafkaConsumer(
            **config.consumer_options(revoke_timeout=context.revoke_timeout),
            ssl_context=self._ssl,
        )
        consumer.subscribe([config.topic], listener=_Rebalance(self, listener))
        self._log.info(
            "joining consumer group %r for topic %r at %s",
            config.group_id,
            config.topic,
            config.bootstrap_servers,
        )
        self._consumer = consumer  # the rebalance listener may run inside start()
        try:
            await consumer.start()
        except KafkaError as exc:
            self._consumer = None
            await consumer.stop()
            raise SourceError(
                f"kafka: cannot connect to {config.bootstrap_servers}: {exc!r}"
            ) from exc
        if consumer.partitions_for_topic(config.topic) is None:
            self._log.warning(
                "topic %r does not exist on %s (yet); waiting for it",
                config.topic,
                config.bootstrap_servers,
            )

    async def fetch(
        self,
        max_wait: float,
        max_records: int,
        partitions: Collection[TopicPartition] | None = None,
    ) -> Mapping[TopicPartition, Sequence[StreamRecord]]:
        consumer = self._require()
        if self._failure is not None:
            raise self._failure
        only = (
            []
            if partitions is None
            else [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        )
        if partitions is not None and not only:
            await self._clock.sleep(max_wait)
            return {}
        try:
            fetched = await consumer.getmany(
                *only, timeout_ms=int(max_wait * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise SourceError(f"kafka: fetch from {self._config.topic!r} failed: {exc!r}") from exc
        out: dict[TopicPartition, list[StreamRecord]] = {}
        for tp, messages in fetched.items():
            if tp not in self._started:
                # Assigned, but its start is still being read: give the records back.
                consumer.seek(tp, messages[0].offset)
                continue
            if tp in self._skip_before:
                messages = self._skip_old(tp, messages)
            out[TopicPartition(tp.topic, tp.partition)] = [
                StreamRecord(
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    timestamp_ms=m.timestamp,
                    timestamp_type=_LOG_APPEND_TIME if m.timestamp_type == 1 else _CREATE_TIME,
                    key=m.key,
                    value=m.value,
                    headers=tuple(m.headers) if m.headers else (),
                )
                for m in messages
            ]
        return out

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        consumer = self._require()
        assigned = consumer.assignment()
        tps = [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        consumer.pause(*(tp for tp in tps if tp in assigned))

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        consumer = self._require()
        assigned = consumer.assignment()
        tps = [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        consumer.resume(*(tp for tp in tps if tp in assigned))

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        consumer = self._require()
        try:
            await consumer.commit(
                {KafkaPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
            )
        except (KafkaError, IllegalStateError) as exc:
            raise SourceError(f"kafka: commit to group {self._config.group_id!r}: {exc!r}") from exc

    def destination(self, target: Destination) -> KafkaTopicDestination | None:
        """``kafka://TOPIC``: written to this cluster; other schemes are not the source's."""
        if not isinstance(target, KafkaDestination):
            return None
        return KafkaTopicDestination(
            target.topic, self._produce, KafkaFormat(self._config.bootstrap_servers)
        )

    async def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record to ``topic`` on the same cluster and wait for its ack."""
        try:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **self._config.client_options(), ssl_context=self._ssl, acks="all"
                )
                await producer.start()
                self._producer = producer
            await self._producer.send_and_wait(topic, value=value, key=key)
        except KafkaError as exc:
            raise SourceError(f"kafka: cannot produce to {topic!r}: {exc!r}") from exc

    def end_offset(self, partition: TopicPartition) -> int | None:
        if self._consumer is None:
            return None
        try:
            end = self._consumer.highwater(KafkaPartition(partition.topic, partition.partition))
        except IllegalStateError:
            return None
        return int(end) if end is not None else None

    async def aclose(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if consumer is not None:
                await consumer.stop()  # leaves the group; commits nothing

    # -- helpers ------------------------------------------------------------------------------

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise SourceError("kafka: the source is not open")
        return self._consumer

    def _skip_old(self, tp: KafkaPartition, messages: list[Any]) -> list[Any]:
        """AT_TIMESTAMP: drop records older than the start until the first one that is not."""
        threshold = self._skip_before[tp]
        for index, message in enumerate(messages):
            if message.timestamp >= threshold:
                del self._skip_before[tp]
                return messages[index:]
        return []

    async def _assigned(self, listener: StreamListener, assigned: set[KafkaPartition]) -> None:
        consumer = self._require()
        config = self._config
        starts: dict[TopicPartition, StreamPosition] = {}
        self._skip_before.clear()
        for tp in sorted(assigned):
            committed = await consumer.committed(tp)
            position: int | None
            if committed is None and config.starting_position == "AT_TIMESTAMP":
                assert config.starting_position_timestamp is not None
                at_ms = int(config.starting_position_timestamp * 1000)
                found = await consumer.offsets_for_times({tp: at_ms})
                if found.get(tp) is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found[tp].offset)
                self._skip_before[tp] = at_ms
                position = None  # commit nothing before the first record at or after it
            else:
                position = await consumer.position(tp)
            starts[TopicPartition(tp.topic, tp.partition)] = StreamPosition(position, committed)
        await listener.assigned(starts)
        self._started.update(assigned)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's callbacks, forwarded to the driver. aiokafka would log and swallow what
    they raise, so a failed assignment is handed to the next fetch instead."""

    def __init__(self, source: KafkaSource, listener: StreamListener) -> None:
        self._source = source
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[KafkaPartition]) -> None:
        self._source._started.difference_update(revoked)
        if revoked:
            await self._listener.revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[KafkaPartition]) -> None:
        try:
            await self._source._assigned(self._listener, assigned)
        except (KafkaError, IllegalStateError, SourceError) as exc:
            # The partitions cannot start: fail the next fetch (and so the service), loudly.
            self._source._failure = SourceError(
                f"kafka: reading where assigned partitions start failed: {exc!r}"
            )


def _ssl_context(config: KafkaConfig) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=config.ssl_cafile,
            certfile=config.ssl_certfile,
            keyfile=config.ssl_keyfile,
            password=config.ssl_key_password,
        )
    except (OSError, ssl.SSLError) as exc:
        raise SourceError(f"kafka: TLS settings: {exc}") from exc
    context.check_hostname = config.ssl_check_hostname
    return context
