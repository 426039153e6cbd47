"""A ``python`` execution environment: the worker's side of the worker channel.

Runs in a child forked from the template (:mod:`~streamfn.runtime.process.template`), after
the limits are applied, with its stdout and stderr on the output pipe:

1. **Init**: make stdout and stderr unbuffered (as AWS's runtime does, so nothing is lost
   if the process dies), give the root logger Lambda's handler
   (:mod:`streamfn.runtime.lambda_logging`, per ``AWS_LAMBDA_LOG_FORMAT`` and
   ``AWS_LAMBDA_LOG_LEVEL``, writing to stdout), point :mod:`tempfile` at the
   environment's /tmp, put the code directory first on ``sys.path``, import the handler
   once, and say :class:`Ready` with the time it took — or :class:`InitFailed` with
   Lambda's error type, and exit.
2. **Invoke**, one at a time, for as long as the engine keeps the environment: decode the
   :class:`Invoke`, set the request id log records carry and ``_X_AMZN_TRACE_ID`` (deleted
   when the invocation has none, as AWS's runtime does), call the handler through
   :mod:`streamfn.runtime.invocation` (the same code the inline runtime uses), answer one
   :class:`Done` with the peak RSS. ``async def``
   handlers run on one event loop kept for the environment's life, so loop-bound objects
   made at module level stay usable.
3. **Exit** after answering when the environment cannot go on: MemoryError (the address
   space limit) is ``Runtime.OutOfMemory``; ``sys.exit()`` is ``Runtime.ExitError`` and
   exits with its status. ``os._exit`` or a crash simply ends the process: the engine sees
   the channel close and learns the exit status from the template.

End of input on the channel means the engine is gone: exit at once.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from streamfn.clock import SystemClock
from streamfn.errors import HandlerImportError
from streamfn.runtime import invocation, lambda_logging
from streamfn.runtime.context import LambdaContext
from streamfn.runtime.envelope import VERSION
from streamfn.runtime.handlers import Handler, load_handler
from streamfn.runtime.policy import LogFormat
from streamfn.runtime.process import limits
from streamfn.runtime.process.protocol import (
    HEADER,
    Done,
    InitFailed,
    Invoke,
    Ready,
    Spawn,
    body_length,
    frame,
    worker_down,
)
from streamfn.types import Outcome

_CLOCK = SystemClock()
_request_id: str | None = None
"""The invocation running (log records carry it)."""


def run(spawn: Spawn, channel: socket.socket) -> NoReturn:
    """The worker's life; never returns."""
    started = time.perf_counter()
    _unbuffered_stdio()
    _lambda_logging()
    tempfile.tempdir = spawn.tmp_dir
    sys.path.insert(0, spawn.code_dir)
    try:
        handler = load_handler(spawn.handler, Path(spawn.code_dir))
    except HandlerImportError as exc:
        message = str(exc).split(f"{exc.error_type}: ", 1)[-1]
        _send(channel, InitFailed(error_type=exc.error_type, message=message))
        os._exit(1)
    except MemoryError:
        message = f"memory limit of {spawn.memory_mb} MB exceeded while importing the handler"
        _send(channel, InitFailed(error_type="Runtime.OutOfMemory", message=message))
        os._exit(1)
    _send(channel, Ready(init_ms=(time.perf_counter() - started) * 1000))
    worker = _Worker(spawn, handler)
    reader = channel.makefile("rb", buffering=1 << 16)
    while True:
        header = reader.read(HEADER.size)
        if len(header) < HEADER.size:
            os._exit(0)  # the engine closed the channel
        body = reader.read(body_length(header))
        invoke = worker_down.decode(body)
        _begin(invoke)
        done, status = worker.invoke(invoke)
        _send(channel, done)
        if status is not None:
            os._exit(status)


class _Worker:
    def __init__(self, spawn: Spawn, handler: Handler) -> None:
        self._handler = handler
        self._is_async = invocation.is_async(handler)
        self._name = spawn.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self._memory_mb = spawn.memory_mb
        self._loop: asyncio.AbstractEventLoop | None = None

    def invoke(self, message: Invoke) -> tuple[Done, int | None]:
        """Run one invocation → the answer, and the exit status if the worker must exit."""
        rid = message.request_id
        context = LambdaContext(
            aws_request_id=rid,
            function_name=self._name,
            invoked_function_arn=message.invoked_function_arn,
            memory_limit_in_mb=self._memory_mb,
            log_stream_name=message.log_stream_name,
            deadline=time.monotonic() + message.remaining_ms / 1000,
            clock=_CLOCK,
            function_version=VERSION,
        )
        try:
            ended = self._call(message.payload, context)
        except MemoryError:
            ended = None
        status: int | None = None
        if ended is None or ended.error_type == "MemoryError":
            ended = self._out_of_memory(rid)
            status = 1
        elif ended.outcome is Outcome.CRASHED:  # sys.exit()
            status = _exit_status(ended.payload)
        limits.flush_c_stdio()
        done = Done(
            outcome=ended.outcome.value,
            payload=ended.payload,
            error_type=ended.error_type,
            log_error=ended.error is not None,
            max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            replace=status is not None,
        )
        return done, status

    def _call(self, payload: bytes, context: LambdaContext) -> invocation.Ended:
        rid = context.aws_request_id
        if self._is_async:
            try:
                event = invocation.unmarshal(payload, rid)
            except invocation.Fault as fault:
                return fault.ended
            handler = self._handler
            return self._settle(lambda: handler(event, context), rid)
        result = invocation.call(self._handler, payload, context)
        if isinstance(result, invocation.Ended):
            return result
        return self._settle(lambda: result, rid)

    def _settle(self, make: Any, rid: str) -> invocation.Ended:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        coroutine: Awaitable[invocation.Ended] = invocation.settle(make, rid)
        return self._loop.run_until_complete(coroutine)

    def _out_of_memory(self, rid: str) -> invocation.Ended:
        message = (
            f"RequestId: {rid} Error: Runtime exited with error: "
            f"memory limit of {self._memory_mb} MB exceeded"
        )
        error = {"errorType": "Runtime.OutOfMemory", "errorMessage": message}
        return invocation.Ended(
            Outcome.CRASHED, msgspec.json.encode(error), "Runtime.OutOfMemory", error
        )


def _begin(message: Invoke) -> None:
    global _request_id
    _request_id = message.request_id
    if message.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = message.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)


def _lambda_logging() -> None:
    json_format = os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    log_format: LogFormat = "JSON" if json_format else "Text"
    logging.Formatter.converter = time.gmtime  # as AWS's runtime: every formatter in UTC
    lambda_logging.install(
        logging.getLogger(),
        log_format=log_format,
        log_level=os.environ.get("AWS_LAMBDA_LOG_LEVEL"),
        write=lambda text: sys.stdout.write(text),
        request_id=lambda: _request_id,
    )


def _exit_status(payload: bytes) -> int:
    """The status in ``logs.exit_payload``'s message ("... exit status N")."""
    message = msgspec.json.decode(payload).get("errorMessage", "")
    tail = message.rsplit(" ", 1)[-1]
    return int(tail) if tail.lstrip("-").isdigit() else 1


def _send(channel: socket.socket, message: Ready | InitFailed | Done) -> None:
    channel.sendall(frame(message))


def _unbuffered_stdio() -> None:
    """What ``python -u`` does: text written to stdout/stderr reaches the pipe at once."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
