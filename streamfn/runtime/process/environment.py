"""One execution environment, as the engine sees it.

An :class:`Environment` is a process forked by the template, its output pipe, its /tmp
directory, and the tasks that watch them (:meth:`Environment.run`, in the runtime's task
group, under the environment's own cancel scope). Two kinds share this base:

- :class:`WorkerEnvironment` (``runtime = "python"``) talks msgpack frames over a socket
  pair (:mod:`~streamfn.runtime.process.protocol`);
- ``ProvidedEnvironment`` (``runtime = "provided"``, in :mod:`streamfn.runtime.runtime_api`)
  serves the Lambda Runtime API to its bootstrap over HTTP.

The pool drives both through the same three calls: :meth:`~Environment.started` (wait for
the end of init: its duration, or :class:`InitError`), :meth:`~Environment.call` (one
invocation: a :class:`Reply`, or None when the process died) and :meth:`~Environment.close`
(kill if needed, wait for the reap, release the pipe, delete /tmp). Deadlines are the
pool's business; an environment only reports what happened.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from streamfn.runtime.process.forkserver import ExitStatus, ForkServer
from streamfn.runtime.process.output import OutputReader
from streamfn.runtime.process.protocol import (
    HEADER,
    Done,
    InitFailed,
    Invoke,
    Ready,
    body_length,
    frame,
    worker_up,
)
from streamfn.types import Outcome

_CHANNEL_ERRORS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


class InitError(Exception):
    """An environment's init failed: Lambda's error type and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class Reply(NamedTuple):
    """How an invocation ended inside an environment that is still there to say so."""

    outcome: Outcome
    payload: bytes
    error_type: str | None = None
    error: dict[str, Any] | None = None  # log as [ERROR] lines
    max_rss_kb: int = 0
    replace: bool = False  # the environment exits after this reply


class Environment:
    def __init__(
        self,
        *,
        env_id: int,
        function: str,
        pid: int,
        exit: ExitStatus,
        output: OutputReader,
        tmp_dir: Path,
        server: ForkServer,
        provisioned: bool,
        log_stream_name: str,
    ) -> None:
        self.env_id = env_id
        self.function = function
        self.pid = pid
        self.exit = exit
        self.output = output
        self.provisioned = provisioned
        self.log_stream_name = log_stream_name
        self.init_ms: float | None = None
        """Init Duration still to report (on the first invocation of an on-demand one)."""
        self.last_used = 0.0
        self.ready = False
        """Its init has succeeded."""
        self._tmp_dir = tmp_dir
        self._server = server
        self._scope = anyio.CancelScope()
        self._finished = anyio.Event()
        self._killed = False

    @property
    def alive(self) -> bool:
        return not self._killed and not self.exit.event.is_set()

    async def run(self) -> None:
        """The environment's tasks (output, exit watch, ...); ends when it is closed."""
        try:
            with self._scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self.output.run)
                    self._start_tasks(tasks)
                    await self.exit.event.wait()
                    await self._exited()
        finally:
            self._finished.set()

    async def started(self) -> None:
        """Wait for the end of init. Raises InitError."""
        raise NotImplementedError

    async def call(self, invoke: Invoke) -> Reply | None:
        """Run one invocation; None if the process died before answering."""
        raise NotImplementedError

    async def kill(self) -> None:
        if not self._killed and not self.exit.event.is_set():
            self._killed = True
            await self._server.kill(self.pid)
        self._killed = True

    async def close(self) -> None:
        """Kill (unless it has exited), wait for the reap, release everything. Shielded."""
        with anyio.CancelScope(shield=True):
            await self.kill()
            await self.exit.event.wait()
            self._scope.cancel()
            await self._finished.wait()  # the tasks are done with what is released below
            self.output.close()
            await self._release()
            await anyio.to_thread.run_sync(_remove, self._tmp_dir)

    async def died(self) -> str:
        """Wait for the exit status of a process that has stopped answering → the reason,
        as AWS words it (``exit status 1``, ``signal: segmentation fault``)."""
        await self.exit.event.wait()
        return exit_reason(self.exit.returncode)

    def _start_tasks(self, tasks: anyio.abc.TaskGroup) -> None:
        pass

    async def _exited(self) -> None:
        """The process has been reaped: unblock whoever waits on it."""

    async def _release(self) -> None:
        pass


class WorkerEnvironment(Environment):
    """A ``python`` environment: the worker of :mod:`~streamfn.runtime.process.worker`."""

    def __init__(self, stream: anyio.abc.UNIXSocketStream, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)

    async def started(self) -> None:
        try:
            message = await self._receive()
        except _CHANNEL_ERRORS:
            raise InitError("Runtime.ExitError", await self._died_message()) from None
        if isinstance(message, InitFailed):
            raise InitError(message.error_type, message.message)
        if not isinstance(message, Ready):
            raise InitError("Runtime.Unknown", f"unexpected message {message!r}")

    async def call(self, invoke: Invoke) -> Reply | None:
        try:
            await self._stream.send(frame(invoke))
            message = await self._receive()
        except _CHANNEL_ERRORS:
            return None
        if not isinstance(message, Done):
            raise RuntimeError(f"worker protocol: expected Done, got {message!r}")
        error = msgspec.json.decode(message.payload) if message.log_error else None
        return Reply(
            Outcome(message.outcome),
            message.payload,
            message.error_type,
            error,
            message.max_rss_kb,
            message.replace,
        )

    async def _receive(self) -> Ready | InitFailed | Done:
        header = await self._reader.receive_exactly(HEADER.size)
        body = await self._reader.receive_exactly(body_length(header))
        message: Ready | InitFailed | Done = worker_up.decode(body)
        return message

    async def _died_message(self) -> str:
        return f"Runtime exited with error: {await self.died()}"

    async def _exited(self) -> None:
        # a process the worker forked may hold the channel open: close our end so a
        # pending receive ends now rather than at the invocation's timeout
        await self._stream.aclose()

    async def _release(self) -> None:
        await self._stream.aclose()


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return f"signal: {name.lower()}"
    return f"exit status {returncode}"


def crash_reply(request_id: str, reason: str, max_rss_kb: int) -> Reply:
    message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
    error = {"errorType": "Runtime.ExitError", "errorMessage": message}
    return Reply(
        Outcome.CRASHED,
        msgspec.json.encode(error),
        "Runtime.ExitError",
        error,
        max_rss_kb,
        replace=True,
    )


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
