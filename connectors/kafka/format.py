"""Lambda's self-managed Kafka shapes: the event, the partial batch response, failure records.

The event a handler receives (``SelfManagedKafka`` has no ``eventSourceArn``)::

    {"eventSource": "SelfManagedKafka", "bootstrapServers": "host:9092,...",
     "records": {"orders-0": [{"topic": "orders", "partition": 0, "offset": 15,
                               "timestamp": 1545084650987, "timestampType": "CREATE_TIME",
                               "key": "<base64>", "value": "<base64>",
                               "headers": [{"traceparent": [48, 48, -1]}]}]}}

Records are grouped under ``"topic-partition"`` in the order given (offset order from the
batch builder). Choices where AWS documents nothing: a null key leaves ``key`` out (as
Powertools' ``record.key`` -> None expects); a tombstone has ``"value": null``. Header
values are arrays of *signed* Java bytes (-128..127). :func:`kafka_event` is the hot path:
msgspec Structs encode the base64 and the JSON in C (~0.25 ms for 500 records of 100 bytes).

A handler with ``ReportBatchItemFailures`` answers ``{"batchItemFailures": [{"itemIdentifier":
{"partition": "orders-0", "offset": 15}}]}``; :func:`parse_batch_item_failures` turns that into
the lowest failed offset per partition, or raises ValueError when the whole batch counts as
failed. On-failure destination records follow AWS's documented ``KafkaBatchInfo`` shape:
:func:`kafka_failure_record` (one per discarded batch) and
:func:`kafka_topic_failure_records` (one message per record, for ``kafka://TOPIC``).
:func:`filter_view` is what filter patterns see of a record.

:class:`KafkaFormat` bundles these as the connector's
:class:`~streamfn.streams.contract.StreamFormat`; the stream core reaches them only
through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from streamfn.streams.contract import Failure
from streamfn.types import InvocationResult, Outcome, StreamRecord, TimestampType, TopicPartition

__all__ = [
    "KafkaFormat",
    "filter_view",
    "kafka_event",
    "kafka_failure_record",
    "kafka_topic_failure_records",
    "parse_batch_item_failures",
]

EVENT_SOURCE = "SelfManagedKafka"


class KafkaFormat:
    """Lambda's self-managed Kafka shapes for a cluster at ``bootstrap_servers`` (which
    events and failure records name)."""

    __slots__ = ("bootstrap_servers",)

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def batch_event(self, records: Sequence[StreamRecord]) -> bytes:
        return kafka_event(records, self.bootstrap_servers)

    def batch_item_failures(
        self, payload: bytes, records: Sequence[StreamRecord]
    ) -> dict[TopicPartition, int]:
        return parse_batch_item_failures(payload, records)

    def filter_view(self, record: StreamRecord) -> dict[str, object]:
        return filter_view(record)

    def failure_record(self, records: Sequence[StreamRecord], failure: Failure) -> dict[str, Any]:
        # dir: stands in for S3, where AWS includes the records themselves; so does function:.
        return kafka_failure_record(
            records=records,
            condition=failure.condition,
            request_id=failure.request_id,
            function_arn=failure.function_arn,
            approximate_invoke_count=failure.approximate_invoke_count,
            result=failure.result,
            bootstrap_servers=self.bootstrap_servers,
            now_ms=failure.now_ms,
            include_payload=True,
        )

    def topic_failure_records(
        self, records: Sequence[StreamRecord], failure: Failure
    ) -> list[dict[str, Any]]:
        """One message per record, for ``kafka://TOPIC`` (see the function of that name)."""
        return kafka_topic_failure_records(
            records=records,
            condition=failure.condition,
            request_id=failure.request_id,
            function_arn=failure.function_arn,
            approximate_invoke_count=failure.approximate_invoke_count,
            result=failure.result,
            bootstrap_servers=self.bootstrap_servers,
            now_ms=failure.now_ms,
        )


class _Record(msgspec.Struct, rename="camel"):
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: TimestampType  # encoded as its value
    key: bytes | msgspec.UnsetType  # UNSET is left out of the JSON
    value: bytes | None  # msgspec encodes bytes as base64
    headers: list[dict[str, list[int]]]


class _Event(msgspec.Struct, rename="camel"):
    event_source: str
    bootstrap_servers: str
    records: dict[str, list[_Record]]


_encoder = msgspec.json.Encoder()
_UNSET = msgspec.UNSET


def kafka_event(records: Iterable[StreamRecord], bootstrap_servers: str) -> bytes:
    """The JSON event for one invocation over ``records``."""
    groups: dict[str, list[_Record]] = {}
    group: list[_Record] = []
    topic, partition = "", -1
    for r in records:
        if r.partition != partition or r.topic != topic:
            topic, partition = r.topic, r.partition
            group = groups.setdefault(f"{topic}-{partition}", [])
        headers = r.headers
        group.append(
            _Record(
                topic,
                partition,
                r.offset,
                r.timestamp_ms,
                r.timestamp_type,
                _UNSET if r.key is None else r.key,
                r.value,
                [{name: memoryview(value).cast("b").tolist()} for name, value in headers]
                if headers
                else [],
            )
        )
    return _encoder.encode(_Event(EVENT_SOURCE, bootstrap_servers, groups))


def parse_batch_item_failures(
    payload: bytes, records: Sequence[StreamRecord]
) -> dict[TopicPartition, int]:
    """The lowest failed offset per partition named in a handler's partial batch response.

    Empty when the batch fully succeeded: an empty or ``null`` response, a response that is
    not an object or has no ``batchItemFailures`` key, or an empty or ``null`` list. Raises
    ValueError, with a message fit for a log line, when the response fails the whole batch:
    invalid JSON, a ``batchItemFailures`` that is not a list, an item that is not
    ``{"itemIdentifier": {...}}``, an identifier whose ``partition`` is not a non-empty
    string or whose ``offset`` is not an integer, or an identifier that names no record of
    ``records``.
    """
    if not payload.strip():
        return {}
    try:
        response = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"response is not JSON: {exc}") from None
    if not isinstance(response, dict):
        return {}
    failures = response.get("batchItemFailures")
    if failures is None:
        return {}
    if not isinstance(failures, list):
        raise ValueError("batchItemFailures: expected a list")
    if not failures:
        return {}
    in_batch = {(f"{r.topic}-{r.partition}", r.offset): r for r in records}
    lowest: dict[TopicPartition, int] = {}
    for i, item in enumerate(failures):
        where = f"batchItemFailures[{i}]"
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, dict):
            raise ValueError(f"{where}.itemIdentifier: expected an object")
        partition, offset = identifier.get("partition"), identifier.get("offset")
        if not isinstance(partition, str) or not partition:
            raise ValueError(f'{where}.itemIdentifier.partition: expected "topic-partition"')
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ValueError(f"{where}.itemIdentifier.offset: expected an integer")
        record = in_batch.get((partition, offset))
        if record is None:
            raise ValueError(f"{where}: {partition} offset {offset} is not in the batch")
        tp = TopicPartition(record.topic, record.partition)
        if offset < lowest.get(tp, offset + 1):
            lowest[tp] = offset
    return lowest


def iso_ms(epoch_ms: int) -> str:
    """``2019-11-14T00:38:04.835Z`` from epoch milliseconds, exactly (no float rounding)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _response_context(result: InvocationResult | None, condition: str) -> dict[str, Any] | None:
    # Null when the function never ran for these records: the payload was too large, they
    # aged out before an invocation, or every try was throttled.
    if result is None or result.outcome is Outcome.THROTTLED:
        return None
    if condition == "MaximumPayloadSizeExceeded":
        return None
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": result.executed_version}
    if result.outcome.is_function_error:
        context["functionError"] = "Unhandled"
    return context  # a partial batch response that ran out of retries has no functionError


def _envelope(
    condition: str,
    request_id: str,
    function_arn: str,
    approximate_invoke_count: int,
    result: InvocationResult | None,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "responseContext": _response_context(result, condition),
        "version": "1.0",
        "timestamp": iso_ms(now_ms),
    }


def kafka_failure_record(
    *,
    records: Sequence[StreamRecord],
    condition: str,
    request_id: str,
    function_arn: str,
    approximate_invoke_count: int,
    result: InvocationResult | None,
    bootstrap_servers: str,
    now_ms: int,
    include_payload: bool = False,
) -> dict[str, Any]:
    """AWS's on-failure record for discarded ``records`` (SQS/SNS/S3 shape).

    ``condition``: ``RetryAttemptsExhausted``, ``RecordAgeExceeded`` or
    ``MaximumPayloadSizeExceeded``. ``result``: the last invocation's, or None if the
    records never reached the function. ``include_payload`` adds the event as ``payload``
    (a JSON object), as AWS does for S3 destinations; use it where a replay needs the data.
    """
    event = kafka_event(records, bootstrap_servers)
    info: dict[str, dict[str, str]] = {}
    for r in records:
        entry = info.get(f"{r.topic}-{r.partition}")
        if entry is None:
            entry = info[f"{r.topic}-{r.partition}"] = {
                "firstRecordOffset": str(r.offset),
                "lastRecordOffset": str(r.offset),
                "firstRecordTimestamp": iso_ms(r.timestamp_ms),
                "lastRecordTimestamp": iso_ms(r.timestamp_ms),
            }
        else:
            entry["lastRecordOffset"] = str(r.offset)
            entry["lastRecordTimestamp"] = iso_ms(r.timestamp_ms)
    record = _envelope(
        condition, request_id, function_arn, approximate_invoke_count, result, now_ms
    )
    record["KafkaBatchInfo"] = {
        "batchSize": len(records),
        "bootstrapServers": bootstrap_servers,
        "payloadSize": len(event),
        "recordsInfo": info,
    }
    if include_payload:
        record["payload"] = msgspec.json.decode(event)
    return record


def kafka_topic_failure_records(
    *,
    records: Sequence[StreamRecord],
    condition: str,
    request_id: str,
    function_arn: str,
    approximate_invoke_count: int,
    result: InvocationResult | None,
    bootstrap_servers: str,
    now_ms: int,
) -> list[dict[str, Any]]:
    """One message per record for a ``kafka://TOPIC`` destination, in the order of ``records``.

    Produce each with its record's key so it lands in the same partition order. AWS's
    example for this destination spells the retry condition ``RetriesExhausted`` where its
    SQS/SNS/S3 records say ``RetryAttemptsExhausted``; this function follows the example
    and renames it. Other conditions pass through.
    """
    if condition == "RetryAttemptsExhausted":
        condition = "RetriesExhausted"
    messages = []
    for r in records:
        event = kafka_event((r,), bootstrap_servers)
        message = _envelope(
            condition, request_id, function_arn, approximate_invoke_count, result, now_ms
        )
        message["KafkaBatchInfo"] = {
            "batchSize": 1,
            "bootstrapServers": bootstrap_servers,
            "payloadSize": len(event),
            "recordInfo": {"offset": str(r.offset), "timestamp": iso_ms(r.timestamp_ms)},
        }
        message["payload"] = msgspec.json.decode(event)
        messages.append(message)
    return messages


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
