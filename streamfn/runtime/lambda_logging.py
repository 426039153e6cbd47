"""The :mod:`logging` setup of AWS's Python runtime, for code that logs as on Lambda.

Ported from ``awslambdaric`` (``bootstrap._setup_logging`` and
``lambda_runtime_log_utils``): the root logger gets one handler, so ``logging.basicConfig()``
in a handler does nothing, and AWS's sample ``logger = logging.getLogger();
logger.setLevel(logging.INFO); logger.info("x")`` writes::

    [INFO]\\t2026-12-01T19:41:26.467Z\\t8f507cfc-xmpl-4697-b07a-ac58fc914c95\\tx\\n

(UTC, the request id of the invocation running, ``""`` outside one). With
``AWS_LAMBDA_LOG_FORMAT=JSON`` each record is one JSON object instead (:class:`JsonFormatter`:
``timestamp``, ``level``, ``message``, ``logger``, ``requestId``, and ``stackTrace``,
``errorType``, ``errorMessage``, ``location`` for a record with an exception, plus the
record's ``extra`` fields). ``AWS_LAMBDA_LOG_LEVEL`` sets the root logger's level
(``TRACE`` is ``DEBUG``); without it the level is Python's default, WARNING.

Who calls: the ``python`` runtime's worker, once before it imports the handler
(:func:`install`, on its own root logger, writing to its stdout); the inline runtime, which
shares the engine's process and root logger, through :class:`InlineLogs`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from streamfn.runtime.policy import LogFormat

TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_RESERVED_FIELDS = frozenset(
    {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process",
        "aws_request_id", "tenant_id", "_frame_type",
    }
)  # fmt: skip
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class JsonFormatter(logging.Formatter):
    """``awslambdaric``'s JSON formatter: one object per record, newline-terminated."""

    def __init__(self) -> None:
        super().__init__(datefmt=JSON_DATE_FORMAT)
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelname = logging.getLevelName(record.levelno)
        exc = record.exc_info
        result: dict[str, Any] = {
            "timestamp": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "message": (
                record.msg
                if isinstance(record.msg, dict) and not record.args
                else record.getMessage()
            ),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc[2]) if exc else None,
            "errorType": exc[0].__name__ if exc and exc[0] else None,
            "errorMessage": str(exc[1]) if exc else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": f"{record.pathname}:{record.funcName}:{record.lineno}" if exc else None,
        }
        tenant = getattr(record, "tenant_id", None)
        if tenant is not None:
            result["tenantId"] = tenant
        result.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _RESERVED_FIELDS and key not in result
        )
        return _encode({k: v for k, v in result.items() if v is not None}) + "\n"


class RequestIdFilter(logging.Filter):
    """Puts the running invocation's request id on every record (``""`` between them)."""

    def __init__(self, request_id: Callable[[], str | None]) -> None:
        super().__init__()
        self._request_id = request_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self._request_id() or ""
        record.tenant_id = None
        return True


class _WriteHandler(logging.Handler):
    def __init__(self, write: Callable[[str], Any]) -> None:
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:
            self.handleError(record)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of the format; times in UTC."""
    if log_format == "JSON":
        return JsonFormatter()
    text = logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT)
    text.converter = time.gmtime
    return text


def level_name(variable: str | None) -> str:
    """The root logger level ``AWS_LAMBDA_LOG_LEVEL`` asks for (``""``: leave it)."""
    name = {None: "", "TRACE": "DEBUG"}.get(variable, variable or "").upper()
    return name if name in logging.getLevelNamesMapping() else ""


def install(
    root: logging.Logger,
    *,
    log_format: LogFormat,
    log_level: str | None,
    write: Callable[[str], Any],
    request_id: Callable[[], str | None],
) -> logging.Handler:
    """Give ``root`` Lambda's handler (``write`` gets each formatted record, its newline
    included); set its level from ``log_level`` (``AWS_LAMBDA_LOG_LEVEL``)."""
    handler = _WriteHandler(write)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter(request_id))
    root.addHandler(handler)
    if level := level_name(log_level):
        root.setLevel(level)
    return handler


# --- the inline runtime: one process, many functions --------------------------------------


class _Running(NamedTuple):
    function: str
    request_id: str
    formatter: logging.Formatter
    min_level: int | None


_running: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "streamfn_inline_invocation", default=None
)


def _ours(record: logging.LogRecord) -> bool:
    """Whether streamfn itself logged it (the function log's own lines among them)."""
    return record.name == "streamfn" or record.name.startswith("streamfn.")


class InlineLogs:
    """Lambda's ``logging`` for handlers that run in the engine's process.

    Who calls: the inline runtime, which opens it (:meth:`installed`) for as long as it is
    open and runs each invocation inside :meth:`invocation`. While installed, the root
    logger has one more handler: a record logged in an invocation's context (its task, the
    worker thread of a sync handler, which copies the context) is formatted as Lambda
    formats it (Text or JSON, the invocation's request id) and written line by line to the
    function log ``log``, filtered by the JSON format's application log level; the
    root's other handlers (the engine's) are given a filter that skips such records.
    Records streamfn logs itself, and records logged outside invocations, are left alone.

    What the shared process cannot give: the root logger's level is the engine's (a
    handler's ``setLevel`` changes it for the engine too, and a record below it never
    reaches any handler), and threads a handler starts do not carry its context.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log

    @contextlib.contextmanager
    def installed(self, root: logging.Logger | None = None) -> Iterator[None]:
        root = root or logging.getLogger()
        ours = _InlineHandler(self._log)
        skip = _OutsideInvocations()
        others = list(root.handlers)
        for handler in others:
            handler.addFilter(skip)
        root.addHandler(ours)
        try:
            yield
        finally:
            root.removeHandler(ours)
            for handler in others:
                handler.removeFilter(skip)

    @contextlib.contextmanager
    def invocation(
        self, function: str, request_id: str, *, log_format: LogFormat, min_level: int | None
    ) -> Iterator[None]:
        token = _running.set(_Running(function, request_id, formatter(log_format), min_level))
        try:
            yield
        finally:
            _running.reset(token)


class _OutsideInvocations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _running.get() is None or _ours(record)


class _InlineHandler(logging.Handler):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        running = _running.get()
        if running is None or _ours(record):
            return
        if running.min_level is not None and record.levelno < running.min_level:
            return
        record.aws_request_id = running.request_id
        record.tenant_id = None
        try:
            text = running.formatter.format(record)
        except Exception:
            self.handleError(record)
            return
        extra = {"function": running.function, "request_id": running.request_id}
        for line in text.removesuffix("\n").split("\n"):
            self._log.info("%s", line, extra=extra)
