"""Lambda's platform log lines and error bodies, as pure functions of their figures.

The shapes follow AWS (and its Python runtime interface client, ``awslambdaric``)::

    START RequestId: <id> Version: $LATEST
    END RequestId: <id>
    REPORT RequestId: <id>\\tDuration: 15.74 ms\\tBilled Duration: 16 ms\\tMemory Size: 128 MB\\t
        Max Memory Used: 56 MB[\\tInit Duration: 130.49 ms][\\tStatus: timeout]

REPORT fields are tab-separated; ``Init Duration`` only on an environment's first
invocation, after the memory figures; ``Status: timeout`` last when the invocation timed out.

A handler's exception becomes ``{"errorMessage", "errorType", "requestId", "stackTrace"}``
where ``stackTrace`` is :func:`traceback.format_list` of the handler's frames (the runtime's
own calling frames dropped, as AWS drops ``bootstrap.py``'s). A timeout becomes
``{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: <id> Error: Task timed out
after 3.00 seconds"}``.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from streamfn.types import Report

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def start_line(request_id: str, version: str = "$LATEST") -> str:
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(request_id: str, report: Report) -> str:
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {report.duration_ms:.2f} ms",
        f"Billed Duration: {report.billed_duration_ms} ms",
        f"Memory Size: {report.memory_size_mb} MB",
        f"Max Memory Used: {report.max_memory_used_mb} MB",
    ]
    if report.init_duration_ms is not None:
        fields.append(f"Init Duration: {report.init_duration_ms:.2f} ms")
    if report.timed_out:
        fields.append("Status: timeout")
    return "\t".join(fields)


def billed_duration(duration_ms: float, *, timeout: float | None = None) -> int:
    """Whole milliseconds, rounded up from the duration as shown (2 decimals), at least 1;
    capped at the timeout for a timed-out invocation, as AWS bills it."""
    billed = max(1, math.ceil(round(duration_ms, 2)))
    return min(billed, math.ceil(timeout * 1000)) if timeout is not None else billed


def timeout_message(timeout: float) -> str:
    return f"Task timed out after {timeout:.2f} seconds"


def timeout_log_line(request_id: str, timeout: float, now: float) -> str:
    """The function-log line AWS writes for a timeout (``now``: wall-clock seconds)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z {request_id} {timeout_message(timeout)}"


def timeout_payload(request_id: str, timeout: float) -> bytes:
    return msgspec.json.encode(
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: {timeout_message(timeout)}",
        }
    )


def exit_payload(request_id: str, status: int) -> bytes:
    """The body AWS returns when the handler made the runtime exit (``sys.exit``)."""
    return msgspec.json.encode(
        {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
            f"exit status {status}",
        }
    )


def fault_object(
    message: str, error_type: str, stack_trace: Iterable[str] = (), *, request_id: str = ""
) -> dict[str, Any]:
    """Lambda's error object, keys in AWS's order."""
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": list(stack_trace),
    }


def error_object(exc: BaseException, *, request_id: str = "") -> dict[str, Any]:
    """The error object for an exception the handler raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    for index, frame in enumerate(frames):
        if not frame.filename.startswith(_RUNTIME_DIR):
            del frames[:index]
            break
    # plain tuples, as AWS's runtime passes them: no column carets (^^^) under the code
    entries = [(frame.filename, frame.lineno or 0, frame.name, frame.line) for frame in frames]
    return fault_object(
        str(exc), type(exc).__name__, traceback.format_list(entries), request_id=request_id
    )


def error_payload(exc: BaseException, *, request_id: str = "") -> bytes:
    return msgspec.json.encode(error_object(exc, request_id=request_id))


def error_log_lines(error: Mapping[str, Any]) -> list[str]:
    """The ``[ERROR]`` lines AWS's runtime logs for an error object, one line each."""
    head = "[ERROR]"
    if error.get("errorType"):
        head += f" {error['errorType']}" + (":" if error.get("errorMessage") else "")
    if error.get("errorMessage"):
        head += f" {error['errorMessage']}"
    lines = [head]
    trace = error.get("stackTrace")
    if trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in trace:
            lines.extend(element.splitlines() or [""])
    return lines
