"""Lambda's platform log lines and error bodies, as pure functions of their figures.

The shapes follow AWS (and its Python runtime interface client, ``awslambdaric``)::

    START RequestId: <id> Version: $LATEST
    END RequestId: <id>
    REPORT RequestId: <id>\\tDuration: 15.74 ms\\tBilled Duration: 16 ms\\tMemory Size: 128 MB\\t
        Max Memory Used: 56 MB[\\tInit Duration: 130.49 ms][\\tStatus: timeout]

REPORT fields are tab-separated; ``Init Duration`` only on an environment's first
invocation, after the memory figures; ``Status: timeout`` last when the invocation timed out.

With the JSON log format (``LoggingConfig.LogFormat = JSON``) START and REPORT are
``platform.start`` / ``platform.report`` records (:func:`platform_start`,
:func:`platform_report`), an error object is one JSON record (:func:`json_error_line`), and
application lines are filtered by their level (:func:`line_level`, AWS's rules).

A handler's exception becomes ``{"errorMessage", "errorType", "requestId", "stackTrace"}``
where ``stackTrace`` is :func:`traceback.format_list` of the handler's frames (the runtime's
own calling frames dropped, as AWS drops ``bootstrap.py``'s). A timeout becomes
``{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: <id> Error: Task timed out
after 3.00 seconds"}``.
"""

from __future__ import annotations

import datetime
import math
import os
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from streamfn.runtime.marshaller import to_json
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


def billed_duration(
    duration_ms: float, *, timeout: float | None = None, init_duration_ms: float | None = None
) -> int:
    """Whole milliseconds, rounded up from the duration as shown (2 decimals), at least 1;
    the invoke part capped at the timeout for a timed-out invocation, and the init phase
    of a cold start added (AWS bills it for on-demand environments since 2025-08-01)."""
    if timeout is not None:
        duration_ms = min(duration_ms, timeout * 1000)
    return max(1, math.ceil(round(duration_ms + (init_duration_ms or 0.0), 2)))


def timestamp(now: float) -> str:
    """``now`` (wall-clock seconds) as AWS prints it: ``2024-01-01T00:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def timeout_message(timeout: float) -> str:
    return f"Task timed out after {timeout:.2f} seconds"


def timeout_log_line(request_id: str, timeout: float, now: float) -> str:
    """The function-log line AWS writes for a timeout (``now``: wall-clock seconds)."""
    return f"{timestamp(now)} {request_id} {timeout_message(timeout)}"


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


# --- the JSON log format ------------------------------------------------------------------

Status = Literal["success", "error", "failure", "timeout"]

LEVELS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "FATAL": 50,
    "CRITICAL": 50,
}
"""Log level names (AWS's, and Python's where they differ) → :mod:`logging` numbers."""


def line_level(line: str) -> int:
    """The level AWS files an application line under in the JSON format: a JSON object's
    ``level`` when it also has an RFC 3339 ``timestamp``, else INFO (plain text too)."""
    info = LEVELS["INFO"]
    if not line.startswith("{"):
        return info
    try:
        record = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return info
    if not isinstance(record, dict):
        return info
    level, stamp = record.get("level"), record.get("timestamp")
    if not isinstance(level, str) or not isinstance(stamp, str) or not _rfc3339(stamp):
        return info
    return LEVELS.get(level.upper(), info)


def _rfc3339(value: str) -> bool:
    if len(value) < 20 or value[10] not in "Tt":
        return False
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def platform_start(request_id: str, now: float, *, version: str = "$LATEST") -> str:
    record = {"requestId": request_id, "version": version}
    return _platform("platform.start", record, now)


def platform_report(
    request_id: str, report: Report, now: float, *, status: Status, error_type: str | None
) -> str:
    metrics: dict[str, Any] = {
        "durationMs": round(report.duration_ms, 2),
        "billedDurationMs": report.billed_duration_ms,
        "memorySizeMB": report.memory_size_mb,
        "maxMemoryUsedMB": report.max_memory_used_mb,
    }
    if report.init_duration_ms is not None:
        metrics["initDurationMs"] = round(report.init_duration_ms, 2)
    record: dict[str, Any] = {"requestId": request_id, "metrics": metrics, "status": status}
    if error_type is not None and status != "success":
        record["errorType"] = error_type
    return _platform("platform.report", record, now)


def _platform(kind: str, record: dict[str, Any], now: float) -> str:
    return msgspec.json.encode({"time": timestamp(now), "type": kind, "record": record}).decode()


def json_error_line(error: Mapping[str, Any], now: float) -> str:
    """The one JSON record AWS's runtime logs for an error object (JSON format)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return to_json({"timestamp": stamp, "level": "ERROR", **error}).decode()
