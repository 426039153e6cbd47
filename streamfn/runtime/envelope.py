"""The platform's envelope around one invocation, written once for every runtime.

Lambda brackets each invocation in its function log::

    START RequestId: <id> Version: $LATEST
    ... the handler's output ...
    [<timestamp> <id> Task timed out after 3.00 seconds]      (a timeout)
    [[ERROR] <type>: <message> / Traceback ...]               (an error object to log)
    END RequestId: <id>
    REPORT RequestId: <id>\\tDuration: ...

Who calls: every runtime (:mod:`~streamfn.runtime.inline`, :mod:`~streamfn.runtime.process`,
and through it ``provided``), in this order: :func:`start` when the handler is about to get
the event, :func:`timed_out` when the runtime's deadline cut it (it logs AWS's timeout line
at that moment, before output still in a pipe is drained), and :func:`finish`, which logs
the rest and builds the :class:`~streamfn.types.InvocationResult`. The line shapes are those
of :mod:`~streamfn.runtime.logs`. Nothing here awaits, raises or reads a clock (``now`` is
passed in: wall-clock seconds).

A function's :class:`Style` (its ``LoggingConfig``) picks the lines: with ``Text`` the ones
above; with ``JSON`` ``platform.start`` and ``platform.report`` records (none with system
log level ``WARN``; the timeout is the report's ``status``), no END line, and the error
object as one JSON record, dropped with application log level ``FATAL``.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec

from streamfn.runtime import logs
from streamfn.runtime.invocation import Ended
from streamfn.runtime.policy import FunctionSpec, LogFormat
from streamfn.types import InvocationResult, Outcome, Report

VERSION = "$LATEST"
"""Every request runs the loaded code."""

_STATUS: dict[Outcome, logs.Status] = {
    Outcome.SUCCESS: "success",
    Outcome.FUNCTION_ERROR: "error",
    Outcome.CRASHED: "failure",
    Outcome.TIMEOUT: "timeout",
}


class Style(NamedTuple):
    """How a function's log is written (AWS's ``LoggingConfig``)."""

    format: LogFormat = "Text"
    application_level: int = logs.LEVELS["INFO"]
    system_level: int = logs.LEVELS["INFO"]

    @classmethod
    def of(cls, spec: FunctionSpec) -> Style:
        levels = logs.LEVELS
        return cls(
            spec.log_format, levels[spec.application_log_level], levels[spec.system_log_level]
        )

    @property
    def min_application_level(self) -> int | None:
        """Application lines below this are dropped; None: every line is kept (Text)."""
        return self.application_level if self.format == "JSON" else None

    @property
    def platform_records(self) -> bool:
        return self.system_level <= logs.LEVELS["INFO"]


TEXT = Style()


def start(log: logging.Logger, request_id: str, *, style: Style = TEXT, now: float = 0.0) -> None:
    if style.format == "Text":
        log.info(logs.start_line(request_id, VERSION))
    elif style.platform_records:
        log.info(logs.platform_start(request_id, now, version=VERSION))


def timed_out(
    log: logging.Logger, request_id: str, timeout: float, now: float, *, style: Style = TEXT
) -> Ended:
    """Log AWS's timeout line (``now``: wall-clock seconds); the ending to finish with."""
    if style.format == "Text":
        log.error(logs.timeout_log_line(request_id, timeout, now))
    return Ended(Outcome.TIMEOUT, logs.timeout_payload(request_id, timeout), "Sandbox.Timedout")


def finish(
    log: logging.Logger,
    request_id: str,
    ended: Ended,
    *,
    duration_ms: float,
    memory_size_mb: int,
    max_memory_used_mb: int,
    init_duration_ms: float | None,
    timeout: float,
    style: Style = TEXT,
    now: float = 0.0,
) -> InvocationResult:
    """Log the error object (if any), END and REPORT; the invocation's result. A timed-out
    invocation is billed at most ``timeout`` (plus the init phase of a cold start) and
    reported with ``Status: timeout``."""
    if ended.error and style.format == "Text":
        for line in logs.error_log_lines(ended.error):
            log.error(line)
    elif ended.error and style.application_level <= logs.LEVELS["ERROR"]:
        log.error(logs.json_error_line(ended.error, now))
    timed_out = ended.outcome is Outcome.TIMEOUT
    report = Report(
        duration_ms=duration_ms,
        billed_duration_ms=logs.billed_duration(
            duration_ms,
            timeout=timeout if timed_out else None,
            init_duration_ms=init_duration_ms,
        ),
        memory_size_mb=memory_size_mb,
        max_memory_used_mb=max_memory_used_mb,
        init_duration_ms=init_duration_ms,
        timed_out=timed_out,
    )
    if style.format == "Text":
        log.info(logs.end_line(request_id))
        log.info(logs.report_line(request_id, report))
    elif style.platform_records:
        status, error_type = _STATUS[ended.outcome], ended.error_type
        record = logs.platform_report(request_id, report, now, status=status, error_type=error_type)
        log.info(record)
    return InvocationResult(
        request_id=request_id,
        outcome=ended.outcome,
        payload=ended.payload,
        executed_version=VERSION,
        error_type=ended.error_type,
        report=report,
    )


def init_failed(
    log: logging.Logger,
    request_id: str,
    *,
    message: str,
    error_type: str,
    memory_size_mb: int,
    max_memory_used_mb: int,
    init_duration_ms: float | None,
    timeout: float,
    style: Style = TEXT,
    now: float = 0.0,
) -> InvocationResult:
    """The whole envelope of an invocation whose handler could not be initialised: START,
    Lambda's error object (``error_type``: ``Runtime.ImportModuleError``, ...), END, REPORT;
    the function error it is."""
    error = logs.fault_object(message, error_type, request_id=request_id)
    start(log, request_id, style=style, now=now)
    payload = msgspec.json.encode(error)
    return finish(
        log,
        request_id,
        Ended(Outcome.FUNCTION_ERROR, payload, error_type, error),
        duration_ms=0.0,
        memory_size_mb=memory_size_mb,
        max_memory_used_mb=max_memory_used_mb,
        init_duration_ms=init_duration_ms,
        timeout=timeout,
        style=style,
        now=now,
    )
