"""Directory notifications for filedrop: inotify on Linux, a periodic walk elsewhere.

inotify tells the two ways a file can appear apart, which filedrop needs: ``IN_MOVED_TO``
means a finished file was renamed into place (take it at once), while ``IN_CREATE`` /
``IN_MODIFY`` / ``IN_CLOSE_WRITE`` mean someone is writing (wait until it is stable).
inotify is not recursive, so every directory below the root gets its own watch; a new
directory is reported as ``directory`` and the source walks it, which also finds files
written into it before its watch existed. A queue overflow is reported as ``rescan``.

Where inotify is not available the :class:`PollingWatcher` reports ``rescan`` every tick
and the source's walk finds what changed, by size and mtime.

Waits are on the source's clock. :meth:`Watcher.watch_tree` walks directories and makes
system calls: the source calls it in a worker thread, never while :meth:`Watcher.notices`
runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import anyio

from streamfn.clock import Clock

Kind = Literal["changed", "moved_in", "deleted", "directory", "rescan"]


class Notice(NamedTuple):
    kind: Kind
    relative: str  # "/"-separated, relative to the watched root; "" for the root


class Watcher(Protocol):
    def watch_tree(self, relative: str = "") -> None:
        """Watch the directory ``relative`` and every directory below it (blocking)."""
        ...

    async def notices(self, wait: float) -> list[Notice]:
        """What happened since the last call; waits up to ``wait`` s of the clock for
        something. Cancellable."""
        ...

    def close(self) -> None: ...


def open_watcher(root: Path, clock: Clock) -> Watcher:
    if sys.platform.startswith("linux"):
        try:
            return InotifyWatcher(root, clock)
        except OSError:  # inotify instances exhausted, or not permitted
            pass
    return PollingWatcher(clock)


class PollingWatcher:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def watch_tree(self, relative: str = "") -> None:
        pass

    async def notices(self, wait: float) -> list[Notice]:
        await self._clock.sleep(wait)
        return [Notice("rescan", "")]

    def close(self) -> None:
        pass


class InotifyWatcher:
    def __init__(self, root: Path, clock: Clock) -> None:
        import inotify_simple  # type: ignore[import-untyped]

        self._flags = inotify_simple.flags
        flags = self._flags
        self._mask = (
            flags.CREATE
            | flags.MODIFY
            | flags.CLOSE_WRITE
            | flags.MOVED_TO
            | flags.MOVED_FROM
            | flags.DELETE
            | flags.DONT_FOLLOW
            | flags.EXCL_UNLINK
        )
        self._root = root
        self._clock = clock
        self._inotify = inotify_simple.INotify(nonblocking=True)
        self._directories: dict[int, str] = {}

    def watch_tree(self, relative: str = "") -> None:
        top = self._root / relative
        for directory, dirnames, _ in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            path = Path(directory)
            try:
                descriptor = self._inotify.add_watch(path, self._mask)
            except OSError:
                continue  # vanished, or not readable: the periodic walk will tell
            rel = path.relative_to(self._root).as_posix()
            self._directories[descriptor] = "" if rel == "." else rel

    async def notices(self, wait: float) -> list[Notice]:
        await _readable_or_after(self._inotify.fileno(), wait, self._clock)
        flags = self._flags
        found: list[Notice] = []
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                found.append(Notice("rescan", ""))
                continue
            if event.mask & flags.IGNORED:
                self._directories.pop(event.wd, None)
                continue
            directory = self._directories.get(event.wd)
            if directory is None or not event.name:
                continue
            relative = f"{directory}/{event.name}" if directory else event.name
            if event.mask & flags.ISDIR:
                if event.mask & (flags.CREATE | flags.MOVED_TO):
                    found.append(Notice("directory", relative))
            elif event.mask & flags.MOVED_TO:
                found.append(Notice("moved_in", relative))
            elif event.mask & (flags.DELETE | flags.MOVED_FROM):
                found.append(Notice("deleted", relative))
            else:
                found.append(Notice("changed", relative))
        return found

    def close(self) -> None:
        self._inotify.close()


async def _readable_or_after(fd: int, wait: float, clock: Clock) -> None:
    """Return when ``fd`` is readable or ``wait`` seconds of ``clock`` have passed."""
    if wait <= 0:
        await anyio.lowlevel.checkpoint()
        return
    async with anyio.create_task_group() as tg:

        async def timeout() -> None:
            await clock.sleep(wait)
            tg.cancel_scope.cancel()

        tg.start_soon(timeout)
        await anyio.wait_readable(fd)
        tg.cancel_scope.cancel()
