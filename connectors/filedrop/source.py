"""The filedrop source's I/O: watch a directory, hash complete files, emit S3 events.

One loop drives everything: it walks the directory once at start (files dropped while
streamfn was down), then waits for notifications (:mod:`connectors.filedrop.watch`), or
for the next moment a pending file may have become stable, and walks again every
``rescan_interval`` in case a notification was lost. Each sighting goes through the pure
:class:`~connectors.filedrop.scan.StabilityTracker`; complete files are hashed (in a worker
thread) and emitted together with the checkpoint that marks them processed.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio.to_thread
import msgspec

from connectors.filedrop.event import object_created_event
from streamfn.errors import SourceError
from streamfn.events.contract import SourceContext

from .config import FiledropConfig
from .scan import Seen, StabilityTracker, format_sequencer, is_candidate, is_new, next_sequence
from .watch import open_watcher

TICK = 1.0  # seconds between looks when nothing happens
TAKE_CONCURRENCY = 32  # files hashed and emitted at once
INLINE_HASH_BYTES = 64 * 1024  # smaller files are hashed on the event loop (tens of µs)
_decode_seen = msgspec.msgpack.Decoder(Seen).decode
_encode = msgspec.msgpack.encode


class _Gone(Exception):
    """The file vanished or changed while it was being read."""


class FiledropSource:
    def __init__(self, config: FiledropConfig) -> None:
        self._config = config
        self._warned: set[str] = set()

    async def run(self, context: SourceContext) -> None:
        config = self._config
        root = (context.root / config.path).resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(f"filedrop: cannot use directory {root}: {exc}") from exc
        self._context = context
        self._root = root
        self._bucket = config.bucket or _bucket_name(root.name)
        self._seen = {k: _decode_seen(v) for k, v in (await context.get_checkpoints()).items()}
        self._tracker = StabilityTracker(config.stable_for)
        context.log.info(
            "drop files into %s to invoke %s (bucket %r, %d file(s) already processed)",
            root,
            context.function,
            self._bucket,
            len(self._seen),
        )
        watcher = open_watcher(root)
        try:
            watcher.watch_tree()
            await self._take_all(await self._walk_and_sight("", context.clock.time()))
            last_walk = context.clock.time()
            while True:
                now = context.clock.time()
                deadline = self._tracker.next_deadline()
                wait = TICK if deadline is None else min(TICK, max(0.0, deadline - now))
                notices = await watcher.notices(wait)
                now = context.clock.time()
                renamed: dict[str, bool] = {}  # changed in any way wins over "moved in"
                ready: list[str] = []
                if now - last_walk >= config.rescan_interval or any(
                    notice.kind == "rescan" for notice in notices
                ):
                    last_walk = now
                    ready += await self._walk_and_sight("", now)
                for notice in notices:
                    if notice.kind == "directory":
                        # A new directory: watch it, then walk it for files already inside.
                        watcher.watch_tree(notice.relative)
                        ready += await self._walk_and_sight(notice.relative, now)
                    elif notice.kind == "deleted":
                        self._tracker.forget(notice.relative)
                        renamed.pop(notice.relative, None)
                    else:
                        moved = notice.kind == "moved_in"
                        renamed[notice.relative] = renamed.get(notice.relative, moved) and moved
                for relative, moved in renamed.items():
                    if self._complete(relative, now, renamed=moved):
                        ready.append(relative)
                now = context.clock.time()
                ready += [rel for rel in self._tracker.due(now) if self._complete(rel, now)]
                await self._take_all(ready)
        finally:
            watcher.close()

    async def _walk_and_sight(self, below: str, now: float) -> list[str]:
        """Walk (part of) the directory; the files found complete."""
        found = await anyio.to_thread.run_sync(self._walk, below)
        return [relative for relative in found if self._complete(relative, now)]

    async def _take_all(self, ready: list[str]) -> None:
        """Hash and emit complete files, several at once (their events are independent;
        the store commits their writes together)."""
        limiter = anyio.CapacityLimiter(TAKE_CONCURRENCY)

        async def take(relative: str) -> None:
            async with limiter:
                await self._take(relative, self._root / relative)

        async with anyio.create_task_group() as tg:
            for relative in dict.fromkeys(ready):
                tg.start_soon(take, relative)

    def _relative(self, path: str) -> str | None:
        relative = os.path.relpath(path, self._root)
        if relative.startswith(".."):
            return None
        return relative.replace(os.sep, "/")

    def _walk(self, below: str = "") -> list[str]:
        found: list[str] = []
        for directory, dirnames, filenames in os.walk(self._root / below):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                relative = self._relative(os.path.join(directory, name))
                if relative is not None:
                    found.append(relative)
        return sorted(found)

    def _complete(self, relative: str, now: float, *, renamed: bool = False) -> bool:
        """Record a sighting of a file; True when it is new and complete, to be taken."""
        config = self._config
        if not is_candidate(relative, prefix=config.prefix, suffix=config.suffix):
            return False
        path = self._root / relative
        try:
            stat = self._stat(path, relative)
        except _Gone:
            self._tracker.forget(relative)
            return False
        if stat is None or not is_new(self._seen.get(relative), stat.st_size, stat.st_mtime_ns):
            self._tracker.forget(relative)
            return False
        return self._tracker.observe(relative, stat.st_size, stat.st_mtime_ns, now, renamed=renamed)

    def _stat(self, path: Path, relative: str) -> os.stat_result | None:
        """The file's stat, or None for what is not a regular file inside the directory."""
        try:
            if path.is_symlink():
                real = path.resolve()
                if not real.is_relative_to(self._root):
                    if relative not in self._warned:
                        self._warned.add(relative)
                        self._context.log.warning(
                            "skipping %s: symlink pointing outside %s", relative, self._root
                        )
                    return None
            stat = path.stat()
        except FileNotFoundError:
            raise _Gone from None
        except OSError as exc:
            self._context.log.warning("skipping %s: %s", relative, exc)
            return None
        return stat if path.is_file() else None

    async def _take(self, relative: str, path: Path) -> None:
        context = self._context
        try:
            if os.stat(path).st_size <= INLINE_HASH_BYTES:
                size, mtime_ns, etag = _hash(path)  # cheaper than a hop to a worker thread
            else:
                size, mtime_ns, etag = await anyio.to_thread.run_sync(_hash, path)
        except (_Gone, FileNotFoundError):
            context.log.warning(
                "skipping %s: deleted or rewritten before it was processed", relative
            )
            return
        previous = self._seen.get(relative)
        if not is_new(previous, size, mtime_ns):
            return
        sequence = next_sequence(previous, time.time_ns())
        event = object_created_event(
            bucket=self._bucket,
            key=relative,
            size=size,
            etag=etag,
            sequencer=format_sequencer(sequence),
            event_time=context.clock.time(),
            region=context.region,
            configuration_id=context.name,
        )
        seen = Seen(size, mtime_ns, etag, sequence)
        key = f"{self._bucket}/{relative}/{etag}"
        await context.emit(event, key, checkpoint=(relative, _encode(seen)))
        self._seen[relative] = seen


def _hash(path: Path) -> tuple[int, int, str]:
    """Size, mtime and MD5 of a file, read once; _Gone if it vanished or changed meanwhile."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as file:
            before = os.fstat(file.fileno())
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        after = os.stat(path)
    except FileNotFoundError:
        raise _Gone from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise _Gone
    return after.st_size, after.st_mtime_ns, digest.hexdigest()


def _bucket_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in ".-" else "-" for c in name.lower()).strip(".-")
    return cleaned[:63] or "bucket"
