"""The engine's side of the control channel to the template process.

:func:`open_fork_server` starts the template (:mod:`~streamfn.runtime.process.template`)
with only the control socket open and a minimal environment, waits for its hello, and
keeps one task reading what it reports. :meth:`ForkServer.spawn` sends a ``Spawn`` with the
environment's descriptors and returns the new pid and an :class:`ExitStatus` that is set
when the template reaps that pid; :meth:`ForkServer.kill` asks the template to SIGKILL an
environment's process group (only the template knows whether the pid is still its child).

Closing the context closes the control socket: the template kills every environment's
process group, reaps them and exits; the engine waits for it (killing it after a grace
period). What holds afterwards: no template, no environment process and nothing left in an
environment's process group; a process that left its group (``setsid()``, ``setpgid()``)
and is still running is killed by the template's shutdown too when its parent has died
(the template, their subreaper, adopted it), but one whose own parent still runs outside
any group the template knows is beyond its reach until cgroups confine environments.

If the template dies while the runtime is open (a handler killed it, or the OOM killer
chose it), the reader does not raise: :attr:`ForkServer.died` is set, every environment
forked by it counts as exited with SIGKILL (they die with it, ``PR_SET_PDEATHSIG``), and a
spawn in flight raises :class:`TemplateError`. :class:`Templates` starts a new template
then, so the runtime goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence

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
    """The template process could not start, or exited before it answered a spawn."""


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
        self.died = anyio.Event()
        """Set when the template exited while it was still wanted."""

    async def spawn(self, spawn: Spawn, fds: Sequence[int]) -> tuple[int, ExitStatus]:
        """Fork a new environment; the caller keeps (and closes) its copies of ``fds``.
        Raises OSError when the fork fails. Shielded: a fork is a millisecond, and a child
        nobody knows of must not be left behind by a cancellation."""
        if self.died.is_set():
            raise TemplateError("the template process exited")
        done, reply = anyio.Event(), list[Spawned]()
        self._spawning[spawn.env_id] = (done, reply)
        with anyio.CancelScope(shield=True):
            try:
                async with self._lock:
                    await self._stream.send_fds(frame(spawn), fds)
            except _GONE as exc:
                self._spawning.pop(spawn.env_id, None)
                raise TemplateError("the template process exited") from exc
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
        except (*_GONE, anyio.IncompleteRead):
            pass  # the template has gone
        finally:
            self._release_waiters()

    def _release_waiters(self) -> None:
        """No more reports will come: wake whoever waits for a spawn or an exit. At a
        close the template killed every environment; if it died, they die with it."""
        died = not self._closing
        for done, _ in self._spawning.values():
            done.set()
        self._spawning.clear()
        for status in self._exits.values():
            if died:
                status.returncode = -signal.SIGKILL  # PR_SET_PDEATHSIG
            status.event.set()
        self._exits.clear()
        if died:
            self.died.set()


class Templates:
    """The template process the runtime forks from, replaced when it dies.

    Who calls: the process runtime runs :meth:`run` as a task of its own for as long as it
    is open, and asks :meth:`current` for the template before each fork. ``on_death`` is
    called (synchronously) once a template has died, before its replacement starts, so the
    runtime can drop the environments that died with it. :meth:`run` raises TemplateError
    when a template cannot be started; cancelling it stops the template in use.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        log: logging.Logger,
        on_death: Callable[[ForkServer], None] = lambda server: None,
    ) -> None:
        self._clock = clock
        self._log = log
        self.on_death = on_death
        self._current: ForkServer | None = None
        self._ready = anyio.Event()
        self.started = 0
        """Templates started so far (1 + replacements)."""
        self.storage = "rlimit"

    async def current(self) -> ForkServer:
        """The live template (waits while a replacement starts)."""
        while True:
            server = self._current
            if server is not None and not server.died.is_set():
                return server
            if self._ready.is_set():  # it was set for the template that died
                self._ready = anyio.Event()
            await self._ready.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a template running; ``task_status.started()`` once the first one is up."""
        while True:
            async with open_fork_server(clock=self._clock) as server:
                self._current = server
                self.storage = server.storage
                if not self.started:
                    task_status.started()
                self.started += 1
                self._ready.set()
                await server.died.wait()
            self._log.error(
                f"the template process (pid {server.pid}) died; its environments died with "
                "it; starting a new one"
            )
            self.on_death(server)


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
