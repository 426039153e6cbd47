"""S3 notification shape and key encoding, field by field."""

from __future__ import annotations

from urllib.parse import unquote_plus

import pytest

from connectors.filedrop.event import encode_key, object_created_event


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("my file.txt", "my+file.txt"),
        ("a+b.txt", "a%2Bb.txt"),
        ("dir/sub dir/x.csv", "dir/sub+dir/x.csv"),
        ("report (final).pdf", "report+%28final%29.pdf"),
        ("ünï.txt", "%C3%BCn%C3%AF.txt"),
        ("a=b&c.txt", "a%3Db%26c.txt"),
        ("plain-name_1.2~x", "plain-name_1.2~x"),
    ],
)
def test_keys_are_form_url_encoded_as_s3_does(key: str, encoded: str) -> None:
    assert encode_key(key) == encoded
    assert unquote_plus(encoded) == key


def test_object_created_event_has_s3s_shape() -> None:
    event = object_created_event(
        bucket="inbox",
        key="my file.txt",
        size=12,
        etag="0" * 32,
        sequencer="00ABC",
        event_time=1_700_000_000.123,
        region="local",
        configuration_id="thumbs-filedrop",
    )
    [record] = event["Records"]
    assert set(record) == {
        "eventVersion",
        "eventSource",
        "awsRegion",
        "eventTime",
        "eventName",
        "userIdentity",
        "requestParameters",
        "responseElements",
        "s3",
    }
    assert record["eventVersion"] == "2.1"
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventTime"] == "2023-11-14T22:13:20.123Z"
    assert record["awsRegion"] == "local"
    s3 = record["s3"]
    assert s3["s3SchemaVersion"] == "1.0"
    assert s3["configurationId"] == "thumbs-filedrop"
    assert s3["bucket"] == {
        "name": "inbox",
        "ownerIdentity": {"principalId": "streamfn"},
        "arn": "arn:aws:s3:::inbox",
    }
    assert s3["object"] == {
        "key": "my+file.txt",
        "size": 12,
        "eTag": "0" * 32,
        "sequencer": "00ABC",
    }


def test_powertools_reads_the_event() -> None:
    from aws_lambda_powertools.utilities.data_classes import S3Event

    event = S3Event(
        object_created_event(
            bucket="b", key="x y.txt", size=1, etag="e", sequencer="01", event_time=0.0
        )
    )
    assert event.bucket_name == "b"
    assert event.object_key == "x y.txt"  # Powertools unquotes the key, as on AWS
    assert event.record.s3.get_object.size == 1
