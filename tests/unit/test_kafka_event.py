"""Lambda's self-managed Kafka event, partial batch response and failure records."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from connectors.kafka.format import (
    iso_ms,
    kafka_event,
    kafka_failure_record,
    kafka_topic_failure_records,
    parse_batch_item_failures,
)
from streamfn.types import (
    InvocationResult,
    Outcome,
    Report,
    StreamRecord,
    TimestampType,
    TopicPartition,
)

SERVERS = "b-1.example:9092,b-2.example:9092"


def rec(
    offset: int,
    *,
    topic: str = "my-topic",
    partition: int = 0,
    key: bytes | None = b"test-key",
    value: bytes | None = b"test-value",
    headers: tuple[tuple[str, bytes], ...] = (),
    timestamp_ms: int = 1_749_116_692_330,
) -> StreamRecord:
    return StreamRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        key=key,
        value=value,
        headers=headers,
    )


def decode(records: list[StreamRecord]) -> Any:
    return json.loads(kafka_event(records, SERVERS))


def test_event_matches_aws_shape_field_by_field() -> None:
    event = decode([rec(100, headers=(("headerKey", b"headerValue"),))])
    assert list(event) == ["eventSource", "bootstrapServers", "records"]
    assert event["eventSource"] == "SelfManagedKafka"
    assert "eventSourceArn" not in event
    assert event["bootstrapServers"] == SERVERS
    assert event["records"] == {
        "my-topic-0": [
            {
                "topic": "my-topic",
                "partition": 0,
                "offset": 100,
                "timestamp": 1749116692330,
                "timestampType": "CREATE_TIME",
                "key": "dGVzdC1rZXk=",
                "value": "dGVzdC12YWx1ZQ==",
                "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}],
            }
        ]
    }


def test_null_key_is_absent_and_tombstone_value_is_null() -> None:
    (record,) = decode([rec(1, key=None, value=None)])["records"]["my-topic-0"]
    assert "key" not in record
    assert record["value"] is None


def test_empty_key_and_value_are_empty_base64() -> None:
    (record,) = decode([rec(1, key=b"", value=b"")])["records"]["my-topic-0"]
    assert record["key"] == "" and record["value"] == ""


def test_headers_are_signed_java_bytes_in_order() -> None:
    headers = (("a", bytes([0, 127, 128, 255])), ("a", b""), ("ü", b"\xc3\xbc"))
    (record,) = decode([rec(1, headers=headers)])["records"]["my-topic-0"]
    assert record["headers"] == [{"a": [0, 127, -128, -1]}, {"a": []}, {"ü": [-61, -68]}]


def test_binary_values_round_trip_through_base64() -> None:
    raw = bytes(range(256))
    (record,) = decode([rec(1, key=raw[::-1], value=raw)])["records"]["my-topic-0"]
    assert base64.b64decode(record["value"]) == raw
    assert base64.b64decode(record["key"]) == raw[::-1]


def test_records_are_grouped_by_topic_partition_in_order() -> None:
    records = [
        rec(5, partition=1),
        rec(7, partition=0),
        rec(6, partition=1),
        rec(1, topic="other", partition=1),
    ]
    event = decode(records)
    assert list(event["records"]) == ["my-topic-1", "my-topic-0", "other-1"]
    assert [r["offset"] for r in event["records"]["my-topic-1"]] == [5, 6]
    assert event["records"]["other-1"][0]["topic"] == "other"


def test_log_append_time() -> None:
    record = msgspec.structs.replace(rec(1), timestamp_type=TimestampType.LOG_APPEND_TIME)
    assert decode([record])["records"]["my-topic-0"][0]["timestampType"] == "LOG_APPEND_TIME"


def test_powertools_reads_the_event() -> None:
    from aws_lambda_powertools.utilities.data_classes import KafkaEvent

    event = KafkaEvent(decode([rec(3, headers=(("h", b"\xff"),)), rec(4, key=None)]))
    first, second = list(event.records)
    assert first.decoded_key == b"test-key" and first.decoded_value == b"test-value"
    assert first.decoded_headers["h"] == b"\xff"
    assert second.key is None and second.offset == 4


# Partial batch response ---------------------------------------------------------------

BATCH = [rec(10), rec(11), rec(12), rec(20, partition=1), rec(21, partition=1)]


def failures(*items: Any) -> bytes:
    return json.dumps({"batchItemFailures": list(items)}).encode()


def ident(partition: Any, offset: Any) -> dict[str, Any]:
    return {"itemIdentifier": {"partition": partition, "offset": offset}}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"  ",
        b'"ok"',
        b"[]",
        b"42",
        b'{"statusCode": 200}',
        b'{"batchItemFailures": []}',
        b'{"batchItemFailures": null}',
    ],
)
def test_responses_meaning_full_success(payload: bytes) -> None:
    assert parse_batch_item_failures(payload, BATCH) == {}


def test_lowest_failed_offset_per_partition() -> None:
    payload = failures(ident("my-topic-0", 12), ident("my-topic-0", 11), ident("my-topic-1", 21))
    assert parse_batch_item_failures(payload, BATCH) == {
        TopicPartition("my-topic", 0): 11,
        TopicPartition("my-topic", 1): 21,
    }


def test_partition_names_with_dashes_resolve_through_the_batch() -> None:
    records = [rec(1, topic="a-b-3", partition=4)]
    assert parse_batch_item_failures(failures(ident("a-b-3-4", 1)), records) == {
        TopicPartition("a-b-3", 4): 1
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"batchItemFailures": "my-topic-0"}', "expected a list"),
        (failures("my-topic-0"), r"batchItemFailures\[0\].itemIdentifier"),
        (failures({"itemIdentifier": None}), "itemIdentifier"),
        (failures({"itemIdentifier": ""}), "itemIdentifier"),
        (failures({"itemidentifier": {"partition": "my-topic-0", "offset": 10}}), "itemId"),
        (failures(ident("", 10)), "partition"),
        (failures(ident(None, 10)), "partition"),
        (failures(ident(0, 10)), "partition"),
        (failures({"itemIdentifier": {"offset": 10}}), "partition"),
        (failures(ident("my-topic-0", "10")), "offset"),
        (failures(ident("my-topic-0", 10.0)), "offset"),
        (failures(ident("my-topic-0", True)), "offset"),
        (failures({"itemIdentifier": {"partition": "my-topic-0"}}), "offset"),
        (failures(ident("my-topic-0", 99)), "not in the batch"),
        (failures(ident("my-topic-1", 10)), "not in the batch"),
        (failures(ident("my-topic-0", 11), ident("nope-0", 1)), r"\[1\]: nope-0"),
    ],
)
def test_malformed_responses_fail_the_whole_batch(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_batch_item_failures(payload, BATCH)


def test_powertools_response_is_understood() -> None:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord

    def handle(record: KafkaEventRecord) -> None:
        if record.offset in (11, 21):
            raise RuntimeError("bad record")

    event = decode(BATCH)
    response = process_partial_response(
        event=event,
        record_handler=handle,
        processor=BatchProcessor(event_type=EventType.Kafka),
        context=None,
    )
    assert parse_batch_item_failures(json.dumps(response).encode(), BATCH) == {
        TopicPartition("my-topic", 0): 11,
        TopicPartition("my-topic", 1): 21,
    }


# Failure records ----------------------------------------------------------------------

ARN = "arn:aws:lambda:local:000000000000:function:orders"


def function_error() -> InvocationResult:
    return InvocationResult(
        request_id="req-1",
        outcome=Outcome.FUNCTION_ERROR,
        payload=b'{"errorMessage": "boom"}',
        executed_version="3",
        error_type="RuntimeError",
        report=Report(
            duration_ms=1, billed_duration_ms=1, memory_size_mb=128, max_memory_used_mb=1
        ),
    )


def test_iso_ms_is_exact() -> None:
    assert iso_ms(1_573_691_886_021) == "2019-11-14T00:38:06.021Z"
    assert iso_ms(1_573_691_884_999) == "2019-11-14T00:38:04.999Z"


def test_failure_record_field_by_field() -> None:
    records = [
        rec(10, timestamp_ms=1_573_691_884_835),
        rec(11, timestamp_ms=1_573_691_885_580),
        rec(20, partition=1, timestamp_ms=1_573_691_885_000),
    ]
    record = kafka_failure_record(
        records=records,
        condition="RetryAttemptsExhausted",
        request_id="req-1",
        function_arn=ARN,
        approximate_invoke_count=4,
        result=function_error(),
        bootstrap_servers=SERVERS,
        now_ms=1_573_691_886_021,
    )
    assert record == {
        "requestContext": {
            "requestId": "req-1",
            "functionArn": ARN,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "3",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2019-11-14T00:38:06.021Z",
        "KafkaBatchInfo": {
            "batchSize": 3,
            "bootstrapServers": SERVERS,
            "payloadSize": len(kafka_event(records, SERVERS)),
            "recordsInfo": {
                "my-topic-0": {
                    "firstRecordOffset": "10",
                    "lastRecordOffset": "11",
                    "firstRecordTimestamp": "2019-11-14T00:38:04.835Z",
                    "lastRecordTimestamp": "2019-11-14T00:38:05.580Z",
                },
                "my-topic-1": {
                    "firstRecordOffset": "20",
                    "lastRecordOffset": "20",
                    "firstRecordTimestamp": "2019-11-14T00:38:05.000Z",
                    "lastRecordTimestamp": "2019-11-14T00:38:05.000Z",
                },
            },
        },
    }
    json.dumps(record)  # plain JSON types only


def test_failure_record_without_an_invocation_has_null_response_context() -> None:
    common: dict[str, Any] = {
        "records": [rec(1)],
        "request_id": "req-2",
        "function_arn": ARN,
        "bootstrap_servers": SERVERS,
        "now_ms": 0,
    }
    oversize = kafka_failure_record(
        condition="MaximumPayloadSizeExceeded",
        approximate_invoke_count=0,
        result=None,
        **common,
    )
    assert oversize["responseContext"] is None
    assert oversize["requestContext"]["approximateInvokeCount"] == 0
    throttled = InvocationResult(request_id="r", outcome=Outcome.THROTTLED, payload=b"")
    aged = kafka_failure_record(
        condition="RecordAgeExceeded", approximate_invoke_count=0, result=throttled, **common
    )
    assert aged["responseContext"] is None


def test_failure_record_after_partial_responses_has_no_function_error() -> None:
    ok = InvocationResult(request_id="r", outcome=Outcome.SUCCESS, payload=b"{}")
    record = kafka_failure_record(
        records=[rec(1)],
        condition="RetryAttemptsExhausted",
        request_id="r",
        function_arn=ARN,
        approximate_invoke_count=2,
        result=ok,
        bootstrap_servers=SERVERS,
        now_ms=0,
        include_payload=True,
    )
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["payload"] == decode([rec(1)])


def test_topic_failure_records_one_per_record() -> None:
    records = [rec(100, timestamp_ms=1_573_755_364_835), rec(101, key=None)]
    messages = kafka_topic_failure_records(
        records=records,
        condition="RetryAttemptsExhausted",
        request_id="req-3",
        function_arn=ARN,
        approximate_invoke_count=3,
        result=function_error(),
        bootstrap_servers=SERVERS,
        now_ms=1_573_755_365_568,
    )
    assert len(messages) == 2
    first = messages[0]
    assert first["requestContext"] == {
        "requestId": "req-3",
        "functionArn": ARN,
        "condition": "RetriesExhausted",  # AWS's spelling for kafka:// destinations
        "approximateInvokeCount": 3,
    }
    assert first["responseContext"]["functionError"] == "Unhandled"
    assert first["version"] == "1.0" and first["timestamp"] == "2019-11-14T18:16:05.568Z"
    assert first["KafkaBatchInfo"] == {
        "batchSize": 1,
        "bootstrapServers": SERVERS,
        "payloadSize": len(kafka_event(records[:1], SERVERS)),
        "recordInfo": {"offset": "100", "timestamp": "2019-11-14T18:16:04.835Z"},
    }
    assert first["payload"] == decode(records[:1])
    assert messages[1]["payload"]["records"]["my-topic-0"][0]["offset"] == 101
    aged = kafka_topic_failure_records(
        records=records[:1],
        condition="RecordAgeExceeded",
        request_id="r",
        function_arn=ARN,
        approximate_invoke_count=0,
        result=None,
        bootstrap_servers=SERVERS,
        now_ms=0,
    )
    assert aged[0]["requestContext"]["condition"] == "RecordAgeExceeded"
