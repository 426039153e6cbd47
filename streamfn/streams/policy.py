"""The rules and the counters of a stream mapping, and what its filters see of a record.

:class:`StreamMappingPolicy` is built once from a source's config
(:class:`~streamfn.streams.contract.StreamSourceConfig`): AWS's settings as the pure
mapper's policies, plus the driver's own budgets. :class:`StreamStatistics` is the frozen snapshot
:meth:`~streamfn.streams.driver.StreamMapping.statistics` returns. :func:`filter_view` is the
one place that decides how a Kafka record is matched against the mapping's filters.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamfn.invoke.destinations import Destination, parse_destination
from streamfn.streams.batching import BatchPolicy
from streamfn.streams.contract import StreamSourceConfig
from streamfn.streams.retry import StreamRetryPolicy
from streamfn.types import StreamRecord


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


def filter_view(record: StreamRecord) -> dict[str, object]:
    """What filters see of a Kafka record, as Lambda matches it: the metadata fields by
    name, and ``key`` / ``value`` decoded from UTF-8 JSON; one that is not JSON is left out,
    so a pattern on it does not match (a tombstone's value is null)."""
    view: dict[str, object] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "timestampType": record.timestamp_type.value,
        "headers": [{name: memoryview(v).cast("b").tolist()} for name, v in record.headers],
    }
    if record.key is not None and (key := _json(record.key)) is not _NOT_JSON:
        view["key"] = key
    if record.value is None:
        view["value"] = None
    elif (value := _json(record.value)) is not _NOT_JSON:
        view["value"] = value
    return view


_NOT_JSON = object()
_decode_json = msgspec.json.Decoder().decode


def _json(data: bytes) -> object:
    try:
        return _decode_json(data)
    except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
        return _NOT_JSON
