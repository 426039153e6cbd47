"""Values that cross the seams between connectors, mapper, invoker and runtime.

All are frozen msgspec Structs: cheap to build, hashable where it matters, and encodable
as they are when a later runtime ships them to a worker process.
"""

from __future__ import annotations

import enum

import msgspec


class Outcome(enum.Enum):
    """How one invocation ended, as far as retry decisions care."""

    SUCCESS = "Success"
    FUNCTION_ERROR = "FunctionError"  # the handler raised or returned an error object
    TIMEOUT = "Timeout"  # still running at its deadline; a function error on AWS
    CRASHED = "Crashed"  # the execution environment died (exit, segfault, OOM)
    THROTTLED = "Throttled"  # never ran: the concurrency limit was reached

    @property
    def is_function_error(self) -> bool:
        """Exceptions, timeouts and crashes: what AWS counts in the Errors metric."""
        return self in (Outcome.FUNCTION_ERROR, Outcome.TIMEOUT, Outcome.CRASHED)


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of Lambda's REPORT line."""

    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None = None
    timed_out: bool = False


class InvocationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One call of one function: what the runtime boundary takes."""

    function: str
    payload: bytes  # JSON text, exactly as the handler's event decodes from it
    request_id: str
    version: str = "$LATEST"
    qualifier: str | None = None  # the alias or version the caller named, for the ARN
    trace_context: str | None = None
    """The caller's trace context (an X-Ray ``Root=...`` header or a W3C ``traceparent``)
    for the invocation's trace id to continue; None starts a new trace."""


class InvocationResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the runtime boundary returns for one :class:`InvocationRequest`.

    ``payload`` is the handler's JSON result on success, and Lambda's error object
    (``{"errorMessage", "errorType", "stackTrace"}``) otherwise.
    """

    request_id: str
    outcome: Outcome
    payload: bytes
    executed_version: str = "$LATEST"
    error_type: str | None = None
    report: Report | None = None  # None when the function never ran (throttled)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


class TimestampType(enum.Enum):
    CREATE_TIME = "CREATE_TIME"
    LOG_APPEND_TIME = "LOG_APPEND_TIME"


class StreamRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One record read from a partitioned stream (a Kafka record)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: TimestampType = TimestampType.CREATE_TIME
    key: bytes | None = None
    value: bytes | None = None  # None is a tombstone
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Payload bytes this record adds to a batch (key, value and headers)."""
        size = len(self.key or b"") + len(self.value or b"")
        for name, value in self.headers:
            size += len(name) + len(value)
        return size


class TopicPartition(msgspec.Struct, frozen=True, order=True):
    topic: str
    partition: int

    def __str__(self) -> str:
        """Lambda's key for a partition: ``topic-partition``."""
        return f"{self.topic}-{self.partition}"
