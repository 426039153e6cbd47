"""``runtime = "provided"``: any language, through the Lambda Runtime API.

A provided environment is the function's ``bootstrap`` executable, forked and ``exec``'d by
the template with the same limits, environment variables and output capture as a Python
worker, plus ``AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`` — an HTTP/1.1 endpoint of its own,
served by the engine for as long as the environment lives:

``GET /2018-06-01/runtime/invocation/next``
    Waits until the engine hands this environment an invocation, then answers 200 with the
    event as the body and the headers ``Lambda-Runtime-Aws-Request-Id``,
    ``Lambda-Runtime-Deadline-Ms`` (wall-clock epoch milliseconds),
    ``Lambda-Runtime-Invoked-Function-Arn`` and ``Lambda-Runtime-Trace-Id`` (the X-Ray
    header, :mod:`streamfn.runtime.tracing`). The first call ends the init phase.
``POST /2018-06-01/runtime/invocation/{id}/response``
    The invocation's result (202).
``POST /2018-06-01/runtime/invocation/{id}/error``
    A function error (202): the body is the error object returned to the caller; its type
    is the ``Lambda-Runtime-Function-Error-Type`` header, else the body's ``errorType``.
``POST /2018-06-01/runtime/init/error``
    Init failed (202); the environment is closed and the error reported.

Other paths are 404, an unknown or finished request id is 400 (``InvalidRequestID``), a
body over 6 MB is 413 (``RequestEntityTooLarge``; a response or error that large ends its
invocation with ``Function.ResponseSizeTooLarge``, as on AWS). A bootstrap that exits,
times out or is killed is handled as a Python worker is (``Runtime.ExitError``,
``Sandbox.Timedout``); one that cannot be executed fails init with
``Runtime.InvalidEntrypoint``.

HTTP is spoken with h11: the bootstrap may be curl, awslambdaric's libcurl client or any
HTTP library, so the framing must be right (keep-alive, chunked bodies, pipelining), yet
four endpoints on loopback need no web framework. h11 is a small, pure-Python, sans-I/O
protocol state machine; the socket work stays on anyio like the rest of the engine.
``Max Memory Used`` is the bootstrap process's own peak RSS (``VmHWM``), not that of the
programs it starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec

from streamfn.clock import Clock
from streamfn.runtime import logs
from streamfn.runtime.marshaller import MAX_RESPONSE
from streamfn.runtime.process.environment import Environment, InitError, Reply
from streamfn.runtime.process.forkserver import ForkServer
from streamfn.runtime.process.output import OutputReader
from streamfn.runtime.process.protocol import Invoke, Spawn
from streamfn.types import Outcome

PREFIX = "/2018-06-01/runtime/"
MAX_BODY = MAX_RESPONSE
_OK = b'{"status":"OK"}'
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class _Pending:
    __slots__ = ("deadline_ms", "done", "invoke", "reply")

    def __init__(self, invoke: Invoke, deadline_ms: int) -> None:
        self.invoke = invoke
        self.deadline_ms = deadline_ms
        self.done = anyio.Event()
        self.reply: Reply | None = None


class ProvidedEnvironment(Environment):
    def __init__(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], *, clock: Clock, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._listener = listener
        self._clock = clock
        self._init_done = anyio.Event()
        self._init_error: InitError | None = None
        self._queue, self._next = anyio.create_memory_object_stream[_Pending](1)
        self._pending: dict[str, _Pending] = {}

    async def started(self) -> None:
        await self._init_done.wait()
        if self._init_error is not None:
            raise self._init_error

    async def call(self, invoke: Invoke) -> Reply | None:
        deadline_ms = int(self._clock.time() * 1000) + invoke.remaining_ms
        pending = _Pending(invoke, deadline_ms)
        self._pending[invoke.request_id] = pending
        try:
            await self._queue.send(pending)
            await pending.done.wait()
        finally:
            self._pending.pop(invoke.request_id, None)
        return pending.reply

    def _start_tasks(self, tasks: anyio.abc.TaskGroup) -> None:
        tasks.start_soon(self._serve)

    async def _serve(self) -> None:
        try:
            await self._listener.serve(self._connection)
        except* anyio.ClosedResourceError:
            pass  # closed under us: the environment is going away

    async def _exited(self) -> None:
        if not self._init_done.is_set():
            code = self.exit.returncode
            if code in (126, 127):
                self._init_error = InitError(
                    "Runtime.InvalidEntrypoint", f"the bootstrap cannot be run (exit {code})"
                )
            else:
                reason = await self.died()
                self._init_error = InitError(
                    "Runtime.ExitError", f"Runtime exited with error: {reason}"
                )
            self._init_done.set()
        for pending in self._pending.values():
            pending.done.set()  # reply None: the process died

    async def _release(self) -> None:
        await self._listener.aclose()
        self._queue.close()
        self._next.close()

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        """Serve one connection of the bootstrap's; never raises (a failing connection
        handler would end the listener)."""
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        with contextlib.suppress(*_GONE, h11.ProtocolError):
            async with stream:
                while True:
                    request = await _read(connection, stream)
                    if request is None:
                        return
                    status, headers, answer = await self._route(*request)
                    await _respond(connection, stream, status, answer, headers)
                    if h11.MUST_CLOSE in (connection.our_state, connection.their_state):
                        return
                    connection.start_next_cycle()

    async def _route(
        self, head: h11.Request, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = head.target.decode("latin-1").split("?", 1)[0]
        parts = path.removeprefix(PREFIX).split("/") if path.startswith(PREFIX) else []
        method = head.method
        if body is None:
            self._too_large(parts)
            message = f"Exceeded maximum allowed payload size ({MAX_BODY} bytes)."
            return 413, [], _error(message, "RequestEntityTooLarge")
        if method == b"GET" and parts == ["invocation", "next"]:
            self._init_done.set()
            pending = await self._next.receive()
            headers = [
                ("Lambda-Runtime-Aws-Request-Id", pending.invoke.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(pending.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", pending.invoke.invoked_function_arn),
            ]
            if pending.invoke.trace_id:
                headers.append(("Lambda-Runtime-Trace-Id", pending.invoke.trace_id))
            return 200, headers, pending.invoke.payload
        if method == b"POST" and parts == ["init", "error"]:
            error_type, error = _posted_error(head, body)
            message = str(error.get("errorMessage", body.decode("utf-8", "replace")))
            self._init_error = InitError(error_type, message)
            self._init_done.set()
            return 202, [], _OK
        if method == b"POST" and len(parts) == 3 and parts[0] == "invocation":
            called = self._pending.get(parts[1])
            if called is None or called.done.is_set():
                return 400, [], _error("Invalid request ID", "InvalidRequestID")
            if parts[2] == "response":
                called.reply = Reply(Outcome.SUCCESS, body, max_rss_kb=self._peak_rss_kb())
            elif parts[2] == "error":
                error_type, error = _posted_error(head, body)
                payload = body if error else msgspec.json.encode(_fault(body, error_type))
                called.reply = Reply(
                    Outcome.FUNCTION_ERROR,
                    payload,
                    error_type,
                    error or _fault(body, error_type),
                    self._peak_rss_kb(),
                )
            else:
                return 404, [], _error(f"no such endpoint: {path}", "NotFound")
            called.done.set()
            return 202, [], _OK
        return 404, [], _error(f"no such endpoint: {method.decode()} {path}", "NotFound")

    def _too_large(self, parts: list[str]) -> None:
        """A response (or error) over the limit ends its invocation as on AWS."""
        if len(parts) != 3 or parts[0] != "invocation" or parts[2] not in ("response", "error"):
            return
        called = self._pending.get(parts[1])
        if called is None or called.done.is_set():
            return
        message = f"Response payload size exceeded maximum allowed payload size ({MAX_BODY} bytes)."
        error = logs.fault_object(message, "Function.ResponseSizeTooLarge")
        called.reply = Reply(
            Outcome.FUNCTION_ERROR,
            msgspec.json.encode(error),
            "Function.ResponseSizeTooLarge",
            error,
            self._peak_rss_kb(),
        )
        called.done.set()

    def _peak_rss_kb(self) -> int:
        with (
            contextlib.suppress(OSError, ValueError),
            open(f"/proc/{self.pid}/status", encoding="ascii") as status,
        ):
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0


async def start_provided(
    spawn: Spawn,
    server: ForkServer,
    *,
    clock: Clock,
    bootstrap: str,
    output: Callable[[int], OutputReader],
) -> ProvidedEnvironment:
    """Open the environment's endpoint and fork-exec its bootstrap (not yet initialised);
    ``output`` makes the reader of its output pipe from the pipe's read end."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    environ = {**spawn.environ, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}"}
    spawn = msgspec.structs.replace(spawn, kind="exec", argv=(bootstrap,), environ=environ)
    out_r, out_w = os.pipe()
    try:
        pid, exit = await server.spawn(spawn, [out_w])
    except BaseException as exc:
        os.close(out_r)
        await listener.aclose()
        if isinstance(exc, OSError):
            raise InitError("Runtime.Unknown", str(exc)) from exc
        raise
    finally:
        os.close(out_w)
    return ProvidedEnvironment(
        listener,
        clock=clock,
        env_id=spawn.env_id,
        function=spawn.environ["AWS_LAMBDA_FUNCTION_NAME"],
        pid=pid,
        exit=exit,
        output=output(out_r),
        tmp_dir=Path(spawn.tmp_dir),
        server=server,
        provisioned=spawn.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] != "on-demand",
        log_stream_name=spawn.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
    )


async def _read(
    connection: h11.Connection, stream: anyio.abc.SocketStream
) -> tuple[h11.Request, bytes | None] | None:
    """The next request and its body (None when it is too large); None at end of input."""
    head: h11.Request | None = None
    body: bytearray | None = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(1 << 16)
            except anyio.EndOfStream:
                data = b""
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            if body is not None:
                body += event.data
                if len(body) > MAX_BODY:
                    body = None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, None if body is None else bytes(body)
        else:  # ConnectionClosed, or PAUSED after a protocol switch we never agree to
            return None


async def _respond(
    connection: h11.Connection,
    stream: anyio.abc.SocketStream,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    fields = [
        *(headers or []),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    await stream.send(connection.send(h11.Response(status_code=status, headers=fields)) or b"")
    await stream.send(connection.send(h11.Data(data=body)) or b"")
    await stream.send(connection.send(h11.EndOfMessage()) or b"")


def _posted_error(head: h11.Request, body: bytes) -> tuple[str, dict[str, Any]]:
    """The error type and object a runtime posted (the object empty if not JSON)."""
    try:
        error = msgspec.json.decode(body) if body.strip() else {}
    except msgspec.DecodeError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    for name, value in head.headers:
        if name == b"lambda-runtime-function-error-type" and value:
            return value.decode("latin-1"), error
    return str(error.get("errorType") or "Unhandled"), error


def _fault(body: bytes, error_type: str) -> dict[str, Any]:
    return logs.fault_object(body.decode("utf-8", "replace"), error_type)


def _error(message: str, error_type: str = "BadRequest") -> bytes:
    return msgspec.json.encode({"errorMessage": message, "errorType": error_type})
