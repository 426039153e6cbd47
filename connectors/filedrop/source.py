"""The filedrop source's I/O: watch a directory, hash complete files, emit S3 events.

One loop drives everything. It iterates :func:`watchfiles.awatch`, which yields the changes
it saw, or an empty set every ``TICK`` when nothing happened; on the first yield (the
watcher is running) it walks the directory once, so a file dropped while streamfn was down
is found and a file dropped during startup is not missed. Each sighting goes through the
pure :class:`~connectors.filedrop.scan.StabilityTracker`; complete files are hashed (in a
worker thread), emitted, and only then checkpointed as processed.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio.to_thread
import msgspec
import watchfiles

from streamfn.errors import SourceError
from streamfn.events.s3 import object_created_event
from streamfn.sources import SourceContext

from .config import FiledropConfig
from .scan import Seen, StabilityTracker, format_sequencer, is_candidate, is_new, next_sequence

TICK_MS = 200
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
        last_walk: float | None = None
        async for changes in watchfiles.awatch(
            root,
            recursive=True,
            yield_on_timeout=True,
            rust_timeout=TICK_MS,
            step=50,
            debounce=1_000,
            watch_filter=None,
            ignore_permission_denied=True,
        ):
            now = context.clock.time()
            if last_walk is None or now - last_walk >= config.rescan_interval:
                last_walk = now
                for relative in await anyio.to_thread.run_sync(self._walk):
                    await self._sighting(relative, now)
            added: set[str] = set()
            modified: set[str] = set()
            for change, path in changes:
                changed = self._relative(path)
                if changed is None:
                    continue
                relative = changed
                if change == watchfiles.Change.deleted:
                    self._tracker.forget(relative)
                elif change == watchfiles.Change.added:
                    added.add(relative)
                else:
                    modified.add(relative)
            for relative in sorted(added | modified):
                if relative in added and (self._root / relative).is_dir():
                    # A directory moved in brings files no notification names.
                    for inner in await anyio.to_thread.run_sync(self._walk, relative):
                        await self._sighting(inner, now)
                    continue
                await self._sighting(relative, now, renamed=relative not in modified)
            for relative in self._tracker.due(context.clock.time()):
                await self._sighting(relative, context.clock.time())

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

    async def _sighting(self, relative: str, now: float, *, renamed: bool = False) -> None:
        config = self._config
        if not is_candidate(relative, prefix=config.prefix, suffix=config.suffix):
            return
        path = self._root / relative
        try:
            stat = self._stat(path, relative)
        except _Gone:
            self._tracker.forget(relative)
            return
        if stat is None or not is_new(self._seen.get(relative), stat.st_size, stat.st_mtime_ns):
            self._tracker.forget(relative)
            return
        renamed = renamed and stat.st_ctime_ns > stat.st_mtime_ns
        if self._tracker.observe(relative, stat.st_size, stat.st_mtime_ns, now, renamed=renamed):
            await self._take(relative, path)

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
            size, mtime_ns, etag = await anyio.to_thread.run_sync(_hash, path)
        except _Gone:
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
        await context.emit(event, f"{self._bucket}/{relative}/{etag}")
        seen = Seen(size, mtime_ns, etag, sequence)
        await context.put_checkpoint(relative, _encode(seen))
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
