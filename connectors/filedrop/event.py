"""S3 ``ObjectCreated`` notifications, as Lambda receives them from S3.

The object key is form-URL-encoded as S3 does it ("my file.txt" → "my+file.txt", a literal
"+" → "%2B", non-ASCII as UTF-8 percent escapes, "/" kept), so handlers written for S3 that
``unquote_plus`` the key work unchanged.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote_plus

from streamfn.events.records import iso_timestamp


def encode_key(key: str) -> str:
    return quote_plus(key, safe="/")


def object_created_event(
    *,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    sequencer: str,
    event_time: float,
    region: str = "local",
    configuration_id: str = "streamfn",
    event_name: str = "ObjectCreated:Put",
) -> dict[str, Any]:
    """One notification with one record. ``key`` is the raw object key; it is encoded here."""
    request_id = hashlib.md5(f"{bucket}/{key}/{sequencer}".encode()).hexdigest()[:16].upper()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": iso_timestamp(event_time),
                "eventName": event_name,
                "userIdentity": {"principalId": "streamfn"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": request_id},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "streamfn"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": encode_key(key),
                        "size": size,
                        "eTag": etag,
                        "sequencer": sequencer,
                    },
                },
            }
        ]
    }
