"""The rules and the counters of a stream mapping, and what its filters see of a record.

:class:`StreamMappingPolicy` is built once from a source's config
(:class:`~streamfn.streams.contract.StreamSourceConfig`): AWS's settings as the pure
mapper's policies, plus the driver's own budgets. :class:`StreamStatistics` is the frozen snapshot
:meth:`~streamfn.streams.driver.StreamMapping.statistics` returns. What filters see of a
record is the connector's business (:meth:`~streamfn.streams.contract.StreamFormat.filter_view`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamfn.invoke.destinations import Destination, parse_destination
from streamfn.streams.batching import BatchPolicy
from streamfn.streams.commit import CommitPolicy
from streamfn.streams.contract import StreamSourceConfig
from streamfn.streams.flow import FlowPolicy
from streamfn.streams.retry import StreamRetryPolicy


class StreamMappingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The rules of one mapping: AWS's settings plus the driver's own budgets."""

    function: str
    batch: BatchPolicy
    retry: StreamRetryPolicy
    on_failure: Destination | None = None
    filters: tuple[str | dict[str, Any], ...] = ()
    function_timeout: float = 3.0
    drain_timeout: float = 30.0  # on stop: how long in-flight batches may take
    revoke_grace: float = 5.0  # beyond the function timeout, for a revoke or a stop
    commit_interval: float = 0.5
    fetch_wait: float = 0.5  # longest wait of one fetch
    fetch_max_records: int = 500
    max_pending: int = 1_000  # unfinished records per partition before it is paused
    max_pending_bytes: int = 64 * 1024 * 1024  # buffered and in flight, all partitions
    pause_after: float = 30.0  # a stall this long pauses the partitions at the source
    destination_retry: float = 5.0

    @property
    def flow(self) -> FlowPolicy:
        return FlowPolicy(
            max_pending=self.max_pending,
            max_pending_bytes=self.max_pending_bytes,
            pause_after=self.pause_after,
        )

    @property
    def commit(self) -> CommitPolicy:
        return CommitPolicy(interval_s=self.commit_interval)

    @property
    def revoke_timeout(self) -> float:
        """Seconds a revoke may drain in-flight batches: the function timeout plus a grace
        period (a stream source's group protocol must allow at least this long)."""
        return self.function_timeout + self.revoke_grace

    @classmethod
    def from_config(
        cls, config: StreamSourceConfig, *, function_timeout: float, drain_timeout: float
    ) -> StreamMappingPolicy:
        batch = BatchPolicy(
            batch_size=config.batch_size,
            window_s=config.maximum_batching_window,
            parallelization_factor=config.parallelization_factor,
        )
        retry = StreamRetryPolicy(
            maximum_retry_attempts=config.maximum_retry_attempts,
            maximum_record_age_s=config.maximum_record_age,
            bisect_on_error=config.bisect_batch_on_function_error,
            report_batch_item_failures=config.report_batch_item_failures,
            has_on_failure_destination=config.on_failure is not None,
        )
        lanes = config.batch_size * config.parallelization_factor
        return cls(
            function=config.function,
            batch=batch,
            retry=retry,
            on_failure=parse_destination(config.on_failure) if config.on_failure else None,
            filters=config.filters,
            function_timeout=function_timeout,
            drain_timeout=drain_timeout,
            fetch_max_records=max(500, config.batch_size),
            max_pending=max(10_000, 4 * lanes),
        )


class StreamStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one mapping's counters, named after Lambda's ESM metrics."""

    records_received: int
    records_delivered: int  # in invocations that succeeded
    records_filtered: int  # FilteredOutEventCount
    records_failed: int  # discarded: written to on_failure (or dropped without one)
    batches: int  # invocations
    retries: int
    throttles: int
    destination_errors: int
    in_flight_batches: int
    buffered_records: int
    paused_partitions: tuple[str, ...]  # not being fetched: over their budget
    committed: dict[str, int]  # "topic-partition" -> last committed offset
    offset_lag: dict[str, int]  # "topic-partition" -> end offset - watermark (OffsetLag)
