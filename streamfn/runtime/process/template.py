"""The template process: a fork server for execution environments.

Forking the engine itself would be unsafe: it is multi-threaded (anyio worker threads, the
SQLite store's connection) and holds descriptors a handler must never get (the state
store's ``flock``, sockets, the Invoke API's listener). So the engine starts this process
once, as ``python -m streamfn.runtime.process.template FD`` with a clean environment and
only the control socket ``FD`` open. It imports the worker runtime, then forks a child per
:class:`~streamfn.runtime.process.protocol.Spawn` — a new environment pays only for its
handler's own import.

Theory of operation (one thread, one blocking ``select`` loop):

- the control socket brings ``Spawn`` (with the environment's descriptors as
  ``SCM_RIGHTS``) and ``Kill``; descriptors queue in arrival order and each ``Spawn``
  takes its own off the queue, as they travel with the first byte of its frame;
- a child becomes its environment: own process group, SIGKILL when the template dies,
  stdout/stderr on the output pipe, every other descriptor closed, working directory
  ``code_dir``, only the environment variables the engine chose, the limits of
  :mod:`~streamfn.runtime.process.limits`; then it runs the Python worker or ``exec``s the
  ``provided`` bootstrap;
- the template is the parent (and the subreaper) of every environment: SIGCHLD wakes the
  loop; it looks at an exited environment before reaping it (``waitid(WNOWAIT)``: the
  zombie keeps its pid, and so its process group id, from being reused), SIGKILLs its
  process group — whatever the handler started goes with it, however the environment
  ended — then reaps it and reports :class:`Exited` with the status and peak RSS; ``Kill``
  is honoured only for a child not yet reaped, so a reused pid is never hit;
- orphans adopted as subreaper that are in no live environment's process group (they
  called ``setsid()`` and their parent has gone) are killed after every reap: a process
  that left its environment's group belongs to no environment, and cannot outlive one;
- end of input on the control socket (the engine closed it, or died): kill every
  environment's group and every child, adopted ones too, until none is left; exit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import shutil
import signal
import socket
import sys
import traceback
from typing import NoReturn

from streamfn.runtime.process import limits, worker
from streamfn.runtime.process.protocol import (
    Exited,
    FrameBuffer,
    Hello,
    Kill,
    Spawn,
    Spawned,
    control_down,
    frame,
)

_CHANNEL_FD = 3


class _Template:
    def __init__(self, control: socket.socket, *, tmpfs: bool) -> None:
        self._control = control
        self._tmpfs = tmpfs
        self._children: set[int] = set()
        self._tmp_dirs: dict[int, str] = {}  # by pid; removed here if the engine cannot
        self._fds: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wake the select
        self._selector.register(self._control, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        storage = "tmpfs" if self._tmpfs else "rlimit"
        self._send(Hello(pid=os.getpid(), storage=storage))
        frames = FrameBuffer()
        while True:
            for key, _ in self._selector.select():
                if key.fileobj == self._wake_r:
                    while _drain(self._wake_r):
                        pass
                    self._reap()
                    continue
                data, fds, _, _ = socket.recv_fds(self._control, 1 << 16, 16)
                self._fds.extend(fds)
                if not data:
                    self._shutdown()
                    return
                frames.feed(data)
                for body in frames.frames():
                    message = control_down.decode(body)
                    if isinstance(message, Kill):
                        self._kill(message.pid)
                    else:
                        self._spawn(message)

    def _spawn(self, spawn: Spawn) -> None:
        passed = [self._fds.popleft() for _ in range(2 if spawn.kind == "python" else 1)]
        error: str | None = None
        try:
            pid = os.fork()
        except OSError as exc:
            pid, error = 0, f"fork failed: {exc}"
        else:
            if pid == 0:
                try:
                    self._become(spawn, passed)
                except BaseException:
                    traceback.print_exc()  # to the output pipe: the function log shows it
                finally:
                    os._exit(127)
            # also done by the child, whichever runs first; fails once it has exec'd
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
            self._children.add(pid)
            self._tmp_dirs[pid] = spawn.tmp_dir
        for fd in passed:
            os.close(fd)
        self._send(Spawned(env_id=spawn.env_id, pid=pid, error=error))

    def _become(self, spawn: Spawn, passed: list[int]) -> NoReturn:
        """In the child: turn into the environment."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)
        limits.die_with_parent()
        self._selector.close()
        self._control.detach()  # closed below with the rest; never by a late __del__
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(passed[0], 1)
        os.dup2(passed[0], 2)
        keep = 3
        if spawn.kind == "python":
            os.dup2(passed[1], _CHANNEL_FD, inheritable=False)
            keep = _CHANNEL_FD + 1
        os.closerange(keep, os.sysconf("SC_OPEN_MAX"))
        try:
            os.chdir(spawn.code_dir)
            os.environ.clear()
            os.environ.update(spawn.environ)
            limits.limit_storage(spawn.tmp_dir, spawn.storage_mb, tmpfs=self._tmpfs)
            limits.limit_files()
            limits.limit_memory(spawn.memory_mb)
        except OSError as exc:
            print(f"streamfn: cannot set up the environment: {exc}", file=sys.stderr)
            os._exit(126)
        if spawn.kind == "python":
            worker.run(spawn, socket.socket(fileno=_CHANNEL_FD))
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores it; programs expect it
        try:
            os.execve(spawn.argv[0], list(spawn.argv), spawn.environ)
        except OSError as exc:
            print(f"streamfn: cannot run {spawn.argv[0]}: {exc}", file=sys.stderr)
            os._exit(126 if os.path.exists(spawn.argv[0]) else 127)

    def _kill(self, pid: int) -> None:
        if pid not in self._children:
            return  # reaped already: the pid may belong to someone else now
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                continue

    def _reap(self) -> None:
        while True:
            try:  # look first: while unreaped, the zombie keeps its pid and pgid taken
                seen = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if seen is None:
                return
            pid = seen.si_pid
            if pid in self._children:
                # an environment ended (by itself, or killed): what it started in its group
                # goes with it, before anyone hears of the exit
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)  # a zombie already: does not block
            if pid in self._children:  # else an orphan adopted as subreaper
                self._children.discard(pid)
                self._tmp_dirs.pop(pid, None)  # the engine removes it now
                code = os.waitstatus_to_exitcode(status)
                self._send(Exited(pid=pid, returncode=code, max_rss_kb=usage.ru_maxrss))
            self._sweep()

    def _sweep(self) -> None:
        """Kill the orphans we adopted that are in no live environment's process group:
        processes that left their group (``setsid()``) and outlived their parent. Each is
        our child until we reap it, so its pid cannot have been reused."""
        for pid in _adopted() - self._children:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) not in self._children:
                    os.kill(pid, signal.SIGKILL)

    def _shutdown(self) -> None:
        for pid in list(self._children):
            self._kill(pid)
        self._children.clear()
        while True:  # kill and reap every child, adopted orphans too, until none is left
            for pid in _adopted():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.wait4(-1, 0)
            except ChildProcessError:
                break
        # the engine removes these after we exit; if it died first, nobody else will
        for path in self._tmp_dirs.values():
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # the runtime's directory, once empty

    def _send(self, message: Hello | Spawned | Exited) -> None:
        with contextlib.suppress(OSError):  # the engine is gone: the next read sees EOF
            self._control.sendall(frame(message))


def _adopted() -> set[int]:
    """This process's children (the template's: its environments and adopted orphans)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", encoding="ascii") as children:
            return {int(pid) for pid in children.read().split()}
    except OSError:  # no CONFIG_PROC_CHILDREN: look through every process
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                        fields = stat.read().rpartition(")")[2].split()
                    if int(fields[1]) == me:
                        found.add(int(entry))
        return found


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when we stop
    limits.prepare_template()
    try:
        _Template(control, tmpfs=limits.can_mount()).serve()
    except BaseException:
        traceback.print_exc()
        raise


if __name__ == "__main__":
    main()
