"""The engine's side of the control channel to the template process.

:func:`open_fork_server` starts the template (:mod:`~streamfn.runtime.process.template`)
with only the control socket open and a minimal environment, waits for its hello, and
keeps one task reading what it reports. :meth:`ForkServer.spawn` sends a ``Spawn`` with the
environment's descriptors and returns the new pid and an :class:`ExitStatus` that is set
when the template reaps that pid; :meth:`ForkServer.kill` asks the template to SIGKILL an
environment's process group (only the template knows whether the pid is still its child).

Closing the context closes the control socket: the template kills every environment,
reaps them and exits; the engine waits for it (killing it after a grace period), so no
process outlives the runtime. If the template dies while the runtime is open, the reader
raises: no environment can be started any more, which is a broken engine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from streamfn.clock import Clock
from streamfn.runtime.process.protocol import (
    HEADER,
    Exited,
    Hello,
    Kill,
    Spawn,
    Spawned,
    body_length,
    control_up,
    frame,
)

_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
_START_TIMEOUT = 30.0
_EXIT_GRACE = 5.0


class TemplateError(RuntimeError):
    """The template process could not start or exited while the runtime was open."""


class ExitStatus:
    """How an environment's process ended; :attr:`event` is set once it has."""

    __slots__ = ("event", "max_rss_kb", "returncode")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.returncode: int | None = None
        self.max_rss_kb = 0


class ForkServer:
    def __init__(self, stream: anyio.abc.UNIXSocketStream, hello: Hello) -> None:
        self.storage = hello.storage
        self.pid = hello.pid
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._lock = anyio.Lock()
        self._spawning: dict[int, tuple[anyio.Event, list[Spawned]]] = {}
        self._exits: dict[int, ExitStatus] = {}
        self._closing = False

    async def spawn(self, spawn: Spawn, fds: Sequence[int]) -> tuple[int, ExitStatus]:
        """Fork a new environment; the caller keeps (and closes) its copies of ``fds``.
        Raises OSError when the fork fails. Shielded: a fork is a millisecond, and a child
        nobody knows of must not be left behind by a cancellation."""
        done, reply = anyio.Event(), list[Spawned]()
        self._spawning[spawn.env_id] = (done, reply)
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._stream.send_fds(frame(spawn), fds)
            await done.wait()
        if not reply:
            raise TemplateError("the template process exited")
        spawned = reply[0]
        if spawned.error is not None:
            raise OSError(spawned.error)
        return spawned.pid, self._exits[spawned.pid]

    async def kill(self, pid: int) -> None:
        """SIGKILL the environment's process group unless it has been reaped already."""
        with anyio.CancelScope(shield=True), contextlib.suppress(*_GONE):
            async with self._lock:
                await self._stream.send(frame(Kill(pid=pid)))

    async def _read(self) -> None:
        try:
            while True:
                header = await self._reader.receive_exactly(HEADER.size)
                body = await self._reader.receive_exactly(body_length(header))
                message = control_up.decode(body)
                if isinstance(message, Spawned):
                    if message.pid:
                        self._exits[message.pid] = ExitStatus()
                    done, reply = self._spawning.pop(message.env_id)
                    reply.append(message)
                    done.set()
                elif isinstance(message, Exited):
                    status = self._exits.pop(message.pid, None)
                    if status is not None:
                        status.returncode = message.returncode
                        status.max_rss_kb = message.max_rss_kb
                        status.event.set()
        except (*_GONE, anyio.IncompleteRead) as exc:
            if not self._closing:
                raise TemplateError("the template process exited unexpectedly") from exc
        finally:
            self._release_waiters()

    def _release_waiters(self) -> None:
        """No more reports will come: wake whoever waits for a spawn or an exit (the
        template kills every environment when it goes, and they die with it)."""
        for done, _ in self._spawning.values():
            done.set()
        for status in self._exits.values():
            status.event.set()


@contextlib.asynccontextmanager
async def open_fork_server(*, clock: Clock) -> AsyncIterator[ForkServer]:
    """Start the template process; yield its handle; on exit stop it and every environment."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await anyio.open_process(
            [sys.executable, "-m", "streamfn.runtime.process.template", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None,  # the template's own tracebacks; environments write elsewhere
            pass_fds=[theirs.fileno()],
            env=_template_environ(),
            start_new_session=True,  # Ctrl-C in a terminal is the engine's to handle
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    stream = await anyio.abc.UNIXSocketStream.from_socket(ours)
    try:
        server = ForkServer(stream, await _hello(stream, clock))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server._read)
            try:
                yield server
            finally:
                server._closing = True
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()  # end of input: the template kills and reaps everything
            await _wait_or_kill(process, clock)


async def _hello(stream: anyio.abc.UNIXSocketStream, clock: Clock) -> Hello:
    reader = BufferedByteReceiveStream(stream)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_cancel_after, clock, _START_TIMEOUT, scope)
            try:
                header = await reader.receive_exactly(HEADER.size)
                body = await reader.receive_exactly(body_length(header))
            except (anyio.EndOfStream, anyio.IncompleteRead) as exc:
                raise TemplateError(
                    "the template process exited at startup (its error is on stderr)"
                ) from exc
            tasks.cancel_scope.cancel()
    if scope.cancelled_caught:
        raise TemplateError(f"the template process did not start in {_START_TIMEOUT:.0f} s")
    message = control_up.decode(body)
    if not isinstance(message, Hello) or reader.buffer:
        raise TemplateError(f"unexpected first message from the template: {message!r}")
    return message


async def _wait_or_kill(process: anyio.abc.Process, clock: Clock) -> None:
    async with anyio.create_task_group() as tasks:

        async def kill_late() -> None:
            await clock.sleep(_EXIT_GRACE)
            with contextlib.suppress(ProcessLookupError):
                process.kill()

        tasks.start_soon(kill_late)
        await process.wait()
        tasks.cancel_scope.cancel()


async def _cancel_after(clock: Clock, seconds: float, scope: anyio.CancelScope) -> None:
    await clock.sleep(seconds)
    scope.cancel()


def _template_environ() -> dict[str, str]:
    """Only what the interpreter needs to find streamfn: the engine's environment (its
    credentials and tokens) stays in the engine."""
    return {
        "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry),
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
    }
