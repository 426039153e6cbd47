"""The contract between the stream driver and a stream connector (the stream path's plugins).

Stream sources
--------------
A stream source (Kafka; later other partitioned logs) is driven by the engine's stream
driver, :class:`streamfn.streams.driver.StreamMapping`, which decides everything: when to
fetch, which partitions to pause, what to commit. The source does I/O only. Its config
subclasses :class:`StreamSourceConfig` (the event-source-mapping settings every stream
shares) and its connector registers with ``kind="stream"`` and a ``format`` (see below).
Who calls what, and when:

- ``connector.create(config)`` once at startup, no I/O (as for event sources);
- ``source.destination(target)`` once when the mapping is built, before ``open`` (no
  I/O), for the mapping's ``on_failure``;
- ``await source.open(listener, context)`` once: connect and join, with the
  :class:`StreamContext` (clock, logger, how long a revoke may take) the source uses for
  every wait and log line; from then on the source calls ``listener.assigned`` /
  ``listener.revoked`` whenever its partitions change, and awaits them (the driver drains
  and commits inside ``revoked``, so the partitions are released only after their
  finished records are committed);
- ``await source.fetch(max_wait, max_records, partitions)`` in a loop from one task;
  ``pause`` / ``resume`` / ``end_offset`` from the driver's tasks; ``commit`` and the
  writes of a destination it provided from any of them, including inside ``revoked``;
- ``await source.aclose()`` last, also after a failure or cancellation; it commits nothing.

``open``, ``fetch``, ``commit`` and a provided destination's ``write`` raise SourceError
when the broker fails them; ``commit`` also when the group has rebalanced under it (the
driver logs it and the records are redelivered to the new owner). Cancelling ``fetch``
loses no record: a record counts as fetched only once ``fetch`` has returned it.

Stream formats
--------------
The driver never looks inside a record: the connector's :class:`StreamFormat` builds the
event a batch is invoked with, reads a partial batch response, gives the view filters
match against, and builds the failure record of a discarded batch. So a Postgres change
stream can bring DynamoDB-shaped events while batching, retries, bisecting and
checkpoints stay the same code. A format is pure (no I/O, no clock) and is called from
the driver's tasks only.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, Protocol

import msgspec
from msgspec import Meta

from streamfn.clock import Clock
from streamfn.config import SourceConfig  # streams' one edge to config: the tagged base
from streamfn.errors import InvalidDestinationError
from streamfn.invoke.destinations import Destination, parse_destination
from streamfn.types import InvocationResult, StreamRecord, TopicPartition

__all__ = [
    "Failure",
    "StreamContext",
    "StreamDestination",
    "StreamFormat",
    "StreamListener",
    "StreamPosition",
    "StreamSource",
    "StreamSourceConfig",
]


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


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What a stream source gets from the driver when it is opened."""

    name: str
    """The mapping's stable id (its log lines and metrics carry it)."""
    clock: Clock
    """Every wait of the source (an idle ``fetch``, a retry) goes through it."""
    log: logging.Logger
    revoke_timeout: float
    """Seconds the driver may take inside ``listener.revoked`` (the function timeout plus
    a grace period): a group protocol must allow at least this long before it gives the
    partitions to another member (Kafka: ``rebalance_timeout_ms``)."""


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why and when a batch was discarded: what a failure record says besides its records."""

    condition: str
    """``RetryAttemptsExhausted``, ``RecordAgeExceeded`` or ``MaximumPayloadSizeExceeded``."""
    request_id: str
    function_arn: str
    approximate_invoke_count: int
    result: InvocationResult | None
    """The last invocation's result; None if the records never reached the function."""
    now_ms: int


class StreamFormat(Protocol):
    """A stream connector's wire format: what the core hands handlers and destinations.

    Given by the connector (``Connector.format(config)``); pure, see the module docstring.
    """

    def batch_event(self, records: Sequence[StreamRecord]) -> bytes:
        """The JSON event of one invocation over ``records`` (offset order per partition)."""
        ...

    def batch_item_failures(
        self, payload: bytes, records: Sequence[StreamRecord]
    ) -> Mapping[TopicPartition, int]:
        """The lowest failed offset per partition named in a partial batch response to an
        invocation over ``records``; empty when the whole batch succeeded. Raises ValueError
        (a message fit for a log line) when the response fails the whole batch."""
        ...

    def filter_view(self, record: StreamRecord) -> dict[str, object]:
        """What the mapping's filter patterns are matched against for ``record``."""
        ...

    def failure_record(
        self, records: Sequence[StreamRecord], failure: Failure
    ) -> dict[str, Any]:
        """The on-failure record of discarded ``records`` for ``dir:`` and ``function:``
        destinations (with the records, so they can be replayed)."""
        ...


class StreamDestination(Protocol):
    """A failure destination a stream source writes itself (Kafka: ``kafka://TOPIC``)."""

    @property
    def uri(self) -> str:
        """The destination as the config names it, for log lines."""
        ...

    async def write(self, records: Sequence[StreamRecord], failure: Failure) -> None:
        """Record the discarded ``records``; returns once they are durable there. Raises a
        retriable StreamfnError (SourceError, DestinationError) when it cannot yet: the
        driver tries again later and keeps the records uncommitted meanwhile."""
        ...


class StreamSource(Protocol):
    """The I/O of one stream event-source mapping; see the module docstring."""

    async def open(self, listener: StreamListener, context: StreamContext) -> None: ...

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

    def destination(self, target: Destination) -> StreamDestination | None:
        """The writer of ``target`` when this source writes that scheme itself (Kafka:
        ``kafka://TOPIC`` on the same cluster); None to have the engine's destination writer
        deliver the format's failure record (``dir:``, ``function:``)."""
        ...

    def end_offset(self, partition: TopicPartition) -> int | None:
        """The last known end (high watermark) of ``partition``, for lag; None if unknown."""
        ...

    async def aclose(self) -> None: ...
