"""The contract between the stream driver and a stream source (the stream path's connectors).

Stream sources
--------------
A stream source (Kafka; later other partitioned logs) is driven by the engine's stream
driver, :class:`streamfn.streams.driver.StreamMapping`, which decides everything: when to
fetch, which partitions to pause, what to commit. The source does I/O only. Its config
subclasses :class:`StreamSourceConfig` (the event-source-mapping settings every stream
shares) and its connector registers with ``kind="stream"``. Who calls what, and when:

- ``connector.create(config)`` once at startup, no I/O (as for event sources);
- ``await source.open(listener)`` once: connect and join; from then on the source calls
  ``listener.assigned`` / ``listener.revoked`` whenever its partitions change, and awaits
  them (the driver drains and commits inside ``revoked``, so the partitions are released
  only after their finished records are committed);
- ``await source.fetch(max_wait, max_records, partitions)`` in a loop from one task;
  ``pause`` / ``resume`` / ``end_offset`` from the driver's tasks; ``commit`` and
  ``produce`` from any of them, including inside ``revoked``;
- ``await source.aclose()`` last, also after a failure or cancellation; it commits nothing.

``open``, ``fetch``, ``commit`` and ``produce`` raise SourceError when the broker fails
them; ``commit`` also when the group has rebalanced under it (the driver logs it and the
records are redelivered to the new owner). Cancelling ``fetch`` loses no record: a record
counts as fetched only once ``fetch`` has returned it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Literal, NamedTuple, Protocol, Self

from msgspec import Meta

from streamfn.config import SourceConfig
from streamfn.errors import InvalidDestinationError
from streamfn.invoke.destinations import parse_destination
from streamfn.types import StreamRecord, TopicPartition

__all__ = ["StreamListener", "StreamPosition", "StreamSource", "StreamSourceConfig"]


class StreamSourceConfig(SourceConfig, frozen=True, kw_only=True):
    """The event-source-mapping settings of every stream source, named as AWS names them.

    A stream connector's config subclasses this (``tag="<name>"``) and adds how to reach
    its stream. Ranges and defaults are AWS's for Kafka (see README, "type = kafka").
    """

    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 100
    maximum_batching_window: Annotated[float, Meta(ge=0, le=300)] = 0.5
    """Seconds from a batch's first record until it is invoked even if not full."""
    parallelization_factor: Annotated[int, Meta(ge=1, le=10)] = 1
    """Batches of one partition in flight at once; records of one key stay in order."""
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: Annotated[int, Meta(ge=-1, le=10_000)] = -1
    """Retries of a failing batch; -1 retries until the records pass maximum_record_age."""
    maximum_record_age: Annotated[int, Meta(ge=-1, le=604_800)] = -1
    """Seconds; -1 or 60..604800. Older records go to on_failure without an invocation."""
    function_response_types: Annotated[
        tuple[Literal["ReportBatchItemFailures"], ...], Meta(max_length=1)
    ] = ()
    on_failure: str | None = None
    """Where records of a discarded batch are recorded: dir:PATH, function:NAME, kafka://TOPIC."""

    def __post_init__(self) -> None:
        age = self.maximum_record_age
        if age != -1 and age < 60:
            raise ValueError(f"`maximum_record_age`: must be -1 or 60..604800 (got {age})")
        if self.on_failure is not None:
            try:
                parse_destination(self.on_failure)
            except InvalidDestinationError as exc:
                raise ValueError(f"`on_failure`: {exc}") from None
        if self.idempotency_key is not None:
            raise ValueError(
                "`idempotency_key`: not available on stream sources; their records are "
                "checkpointed by offset (delivery is at least once)"
            )

    @property
    def report_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.function_response_types

    def embedded_kafka_topics(self) -> tuple[str, ...]:
        """The topics this source needs on ``streamfn run --embedded-kafka``'s broker; empty
        when it does not use that broker."""
        return ()

    def with_embedded_kafka(self, bootstrap_servers: str) -> Self:
        """This config, pointed at the embedded broker at ``bootstrap_servers``."""
        return self


class StreamPosition(NamedTuple):
    """Where an assigned partition starts."""

    position: int | None
    """The offset of the next record fetch will return, if known."""
    committed: int | None
    """The group's committed offset, or None when the group has none for the partition."""


class StreamListener(Protocol):
    """Told by a stream source when its partitions change; implemented by the driver."""

    async def assigned(self, partitions: Mapping[TopicPartition, StreamPosition]) -> None:
        """These partitions are now this consumer's. May be called after ``fetch`` has
        already returned records of them (the driver then keeps what it tracked)."""
        ...

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """These partitions are being taken away. Returns once their in-flight batches have
        ended (bounded by the function timeout) and their watermark is committed. Never
        raises; cancellation abandons the drain (the records are redelivered elsewhere)."""
        ...


class StreamSource(Protocol):
    """The I/O of one stream event-source mapping; see the module docstring."""

    @property
    def bootstrap_servers(self) -> str:
        """The broker list as events and failure records name it."""
        ...

    async def open(self, listener: StreamListener) -> None: ...

    async def fetch(
        self,
        max_wait: float,
        max_records: int,
        partitions: Collection[TopicPartition] | None = None,
    ) -> Mapping[TopicPartition, Sequence[StreamRecord]]:
        """Up to ``max_records`` records, in offset order per partition, waiting up to
        ``max_wait`` seconds when none are ready. Only of ``partitions`` when given (records
        of the others stay where they are, for a later fetch); never of a paused or
        unassigned partition."""
        ...

    def pause(self, partitions: Collection[TopicPartition]) -> None: ...

    def resume(self, partitions: Collection[TopicPartition]) -> None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) to the group."""
        ...

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record to ``topic`` on the same cluster and wait for its ack (for
        ``kafka://TOPIC`` failure destinations)."""
        ...

    def end_offset(self, partition: TopicPartition) -> int | None:
        """The last known end (high watermark) of ``partition``, for lag; None if unknown."""
        ...

    async def aclose(self) -> None: ...
