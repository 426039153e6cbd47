"""The in-process runtime: handlers run inside the engine's own process.

Theory of operation:

- :func:`open_inline_runtime` imports every function's handler at open (the Init phase),
  timing each import on the clock; a handler that cannot be imported raises
  :class:`~streamfn.errors.HandlerImportError` there, never at the first event. Each
  function is one warm execution environment: its first REPORT carries ``Init Duration``.
- With ``strict=False`` a handler that cannot be imported does not fail the open: the
  error is logged once (handler string, Lambda's error type) and each invocation of that
  function ends as FUNCTION_ERROR with that error object, as AWS's failed Init does.
- :meth:`InlineRuntime.invoke` logs START, decodes the payload (empty → ``{}``), calls the
  handler, JSON-encodes its result (``bytes`` pass through unchanged, as on AWS), and logs
  END and REPORT. Sync handlers run in a worker thread bounded by a CapacityLimiter of
  ``max_concurrency``, so the event loop never blocks on them; ``async def``
  handlers are awaited on the loop (one that blocks, blocks the engine).
- A watchdog task sleeps on the clock until ``timeout`` seconds after the start and then
  cancels the call: the result is TIMEOUT with AWS's ``Sandbox.Timedout`` body and
  ``Status: timeout`` in REPORT. An async handler is cancelled. A sync handler's thread
  cannot be killed in-process: it is abandoned and runs on to its end (its result is
  dropped); :meth:`InlineRuntime.statistics` counts such threads. Abandoned threads are
  anyio workers (not daemon threads), so the process exits only after they return; the
  worker-process runtime kills a timed-out environment instead.
- Every way a handler ends becomes a result: an exception → FUNCTION_ERROR with Lambda's
  error object (also logged as AWS's ``[ERROR]`` lines); invalid JSON input →
  ``Runtime.UnmarshalError``; an unencodable result → ``Runtime.MarshalError``;
  ``sys.exit()`` → CRASHED with ``Runtime.ExitError``.

Not isolated here (the worker-process runtime does these): environment variables (the
function's ``environment`` and ``AWS_LAMBDA_*`` are not set, as one process cannot hold a
value per function), stdout (``print`` goes to the engine's stdout as written, not to the
function log), memory (``Max Memory Used`` is the engine process's peak RSS), imports
made while handling (see :mod:`streamfn.runtime.handlers`), the trace id
(``_X_AMZN_TRACE_ID`` is not set: one variable cannot hold a value per concurrent
invocation), and ``logging``'s root logger,
which is the engine's (see :class:`~streamfn.runtime.lambda_logging.InlineLogs`: records
a handler logs during its invocation are written to the function log in Lambda's format,
but the root's level is the engine's). Every request runs the loaded code, so the
executed version is always ``$LATEST``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from streamfn.clock import Clock
from streamfn.errors import HandlerImportError
from streamfn.runtime import envelope
from streamfn.runtime.base import FUNCTION_LOGGER
from streamfn.runtime.context import LambdaContext, log_stream_name
from streamfn.runtime.deadlines import Deadlines
from streamfn.runtime.envelope import VERSION
from streamfn.runtime.handlers import Handler, HandlerLoader, init_message, log_init_error
from streamfn.runtime.invocation import Ended as _Ended
from streamfn.runtime.invocation import Fault as _Fault
from streamfn.runtime.invocation import call as _call
from streamfn.runtime.invocation import is_async as _is_async
from streamfn.runtime.invocation import settle as _settle
from streamfn.runtime.invocation import unmarshal as _unmarshal
from streamfn.runtime.lambda_logging import InlineLogs
from streamfn.runtime.policy import RuntimePolicy
from streamfn.types import InvocationRequest, InvocationResult


class InlineRuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    abandoned_threads: int
    """Sync handlers still running in their thread after their invocation timed out."""


class InlineRuntime:
    """Runs invocations in this process; built by :func:`open_inline_runtime`."""

    def __init__(
        self,
        policy: RuntimePolicy,
        functions: dict[str, _Function],
        *,
        clock: Clock,
        log: logging.Logger,
        deadlines: Deadlines,
        logs: InlineLogs,
        broken: dict[str, _Broken] | None = None,
    ) -> None:
        self._broken = broken or {}
        self._deadlines = deadlines
        self._logs = logs
        self._policy = policy
        self._functions = functions
        self._clock = clock
        self._log = log
        self._limiter = anyio.CapacityLimiter(policy.max_concurrency)
        self._lock = threading.Lock()
        self._abandoned = 0

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """See :class:`streamfn.runtime.base.Runtime`. Raises LookupError for a function
        this runtime did not load (a bug in the caller)."""
        fn = self._functions.get(request.function)
        if fn is None:
            broken = self._broken.get(request.function)
            if broken is not None:
                return self._init_failed(broken, request.request_id)
            raise LookupError(f"function {request.function!r} is not loaded in this runtime")
        rid = request.request_id
        init_ms, fn.init_duration_ms = fn.init_duration_ms, None
        style = fn.style
        envelope.start(self._log, rid, style=style, now=self._clock.time())
        started = self._clock.monotonic()
        context = LambdaContext(
            aws_request_id=rid,
            function_name=fn.name,
            invoked_function_arn=self._policy.arn(fn.name, request.qualifier),
            memory_limit_in_mb=fn.memory_size,
            log_stream_name=fn.log_stream_name,
            deadline=started + fn.timeout,
            clock=self._clock,
            function_version=VERSION,
        )
        call = _Call()
        ended: _Ended | None = None
        expiry = anyio.CancelScope()
        logs = self._logs.invocation(
            fn.name, rid, log_format=style.format, min_level=style.min_application_level
        )
        try:
            with logs, self._deadlines.limit(started + fn.timeout) as expiry:
                ended = await self._run(fn, request.payload, context, call)
        finally:
            if (ended is None or expiry.cancel_called) and not fn.is_async:
                self._abandon(call)  # timed out, or the caller gave up (shutdown)
        duration_ms = (self._clock.monotonic() - started) * 1000
        if ended is None or expiry.cancel_called:
            ended = envelope.timed_out(self._log, rid, fn.timeout, self._clock.time(), style=style)
        return envelope.finish(
            self._log,
            rid,
            ended,
            duration_ms=duration_ms,
            memory_size_mb=fn.memory_size,
            max_memory_used_mb=_peak_rss_mb(),
            init_duration_ms=init_ms,
            timeout=fn.timeout,
            style=style,
            now=self._clock.time(),
        )

    def _init_failed(self, broken: _Broken, rid: str) -> InvocationResult:
        return envelope.init_failed(
            self._log,
            rid,
            message=broken.message,
            error_type=broken.error_type,
            memory_size_mb=broken.memory_size,
            max_memory_used_mb=_peak_rss_mb(),
            init_duration_ms=None,
            timeout=broken.timeout,
            style=broken.style,
            now=self._clock.time(),
        )

    def statistics(self) -> InlineRuntimeStatistics:
        with self._lock:
            return InlineRuntimeStatistics(abandoned_threads=self._abandoned)

    async def _run(
        self, fn: _Function, payload: bytes, context: LambdaContext, call: _Call
    ) -> _Ended:
        rid = context.aws_request_id
        if fn.is_async:
            try:
                event = _unmarshal(payload, rid)
            except _Fault as fault:
                return fault.ended
            return await _settle(lambda: fn.handler(event, context), rid)
        done = await anyio.to_thread.run_sync(
            self._call_sync,
            fn.handler,
            payload,
            context,
            call,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )
        if isinstance(done, _Ended):
            return done
        return await _settle(lambda: done, rid)  # a sync wrapper around an async handler

    def _call_sync(
        self, handler: Handler, payload: bytes, context: LambdaContext, call: _Call
    ) -> _Ended | Awaitable[Any]:
        """Runs in the worker thread."""
        try:
            return _call(handler, payload, context)
        finally:
            with self._lock:
                call.finished = True
                if call.abandoned:
                    self._abandoned -= 1

    def _abandon(self, call: _Call) -> None:
        with self._lock:
            if not call.finished and not call.abandoned:
                call.abandoned = True
                self._abandoned += 1


@contextlib.asynccontextmanager
async def open_inline_runtime(
    policy: RuntimePolicy,
    *,
    clock: Clock,
    log: logging.Logger | None = None,
    strict: bool = True,
) -> AsyncIterator[InlineRuntime]:
    """Import every function's handler, then yield the runtime. Raises HandlerImportError
    when ``strict``; otherwise logs it once and that function's invocations fail with it.

    Imports run on the event loop thread, one function after another (AWS's Init phase);
    on exit the imported modules are forgotten, so opening again imports afresh.
    """
    loader = HandlerLoader()
    try:
        functions: dict[str, _Function] = {}
        broken: dict[str, _Broken] = {}
        for name, function in policy.functions.items():
            started = clock.monotonic()
            try:
                handler = loader.load(function.handler, function.code_dir)
            except HandlerImportError as exc:
                if strict:
                    raise
                broken[name] = _Broken.of(
                    name, exc, function.timeout, function.memory_size, envelope.Style.of(function)
                )
                continue
            init_ms = (clock.monotonic() - started) * 1000
            functions[name] = _Function(
                name=name,
                handler=handler,
                is_async=_is_async(handler),
                timeout=function.timeout,
                memory_size=function.memory_size,
                log_stream_name=log_stream_name(clock.time(), VERSION),
                init_duration_ms=init_ms,
                style=envelope.Style.of(function),
            )
        deadlines = Deadlines(clock)
        log = log or logging.getLogger(FUNCTION_LOGGER)
        logs = InlineLogs(log)
        async with anyio.create_task_group() as watchdog:
            watchdog.start_soon(deadlines.run)
            with logs.installed():
                yield InlineRuntime(
                    policy,
                    functions,
                    clock=clock,
                    log=log,
                    deadlines=deadlines,
                    logs=logs,
                    broken=broken,
                )
            watchdog.cancel_scope.cancel()
    finally:
        loader.close()


@dataclass(slots=True)
class _Function:
    name: str
    handler: Handler
    is_async: bool
    timeout: int
    memory_size: int
    log_stream_name: str
    init_duration_ms: float | None  # until the first invocation takes it
    style: envelope.Style


@dataclass(frozen=True, slots=True)
class _Broken:
    """A function whose handler could not be imported: what each invocation fails with."""

    name: str
    error_type: str
    message: str
    timeout: int
    memory_size: int
    style: envelope.Style

    @classmethod
    def of(
        cls,
        name: str,
        exc: HandlerImportError,
        timeout: int,
        memory_size: int,
        style: envelope.Style,
    ) -> _Broken:
        message = init_message(exc)
        log_init_error(name, exc.handler, exc.error_type, message)
        return cls(name, exc.error_type, message, timeout, memory_size, style)


@dataclass(slots=True)
class _Call:
    finished: bool = False  # both guarded by InlineRuntime._lock
    abandoned: bool = False


if sys.platform == "win32":

    def _peak_rss_mb() -> int:
        return 0

else:
    import resource

    def _peak_rss_mb() -> int:
        """The engine process's peak resident set size (Linux: KiB, macOS: bytes)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return math.ceil(peak / (1024 * 1024 if sys.platform == "darwin" else 1024))
