"""Destination records of asynchronous invocations, in AWS's shape.

::

    {"version": "1.0", "timestamp": "2019-11-14T18:16:05.568Z",
     "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "requestPayload": <the event>,
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                         "functionError": "Unhandled"},
     "responsePayload": <the function's result or error object>}

``condition`` is ``Success`` for on-success records and ``RetriesExhausted``,
``EventAgeExceeded`` or ``ZeroReservedConcurrency`` for on-failure ones. When the function
never ran for the discarded event (it aged out in the queue), ``responseContext`` and
``responsePayload`` are left out, as AWS does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from streamfn.types import InvocationResult


def iso_timestamp(epoch_seconds: float) -> str:
    """``2019-11-14T18:16:05.568Z``: UTC, millisecond precision."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def async_destination_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    approximate_invoke_count: int,
    request_payload: bytes,
    result: InvocationResult | None,
    timestamp: float,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_timestamp(timestamp),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "requestPayload": _decode(request_payload),
    }
    if result is not None and result.report is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": result.executed_version}
        if not result.ok:
            response["functionError"] = "Unhandled"
        record["responseContext"] = response
        record["responsePayload"] = _decode(result.payload)
    return record


def _decode(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload.decode("utf-8", errors="replace")
