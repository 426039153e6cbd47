"""The filedrop source's I/O: watch a directory, hash complete files, emit S3 events.

One loop drives everything: it walks the directory once at start (files dropped while
streamfn was down), then waits for notifications (:mod:`connectors.filedrop.watch`), or
for the next moment a pending file may have become stable, and walks again every
``rescan_interval`` in case a notification was lost. Every look at the file system (the
walk, and the ``stat`` of each file it finds or a notification names) happens in one worker
thread hop per turn of the loop; each sighting then goes through the pure
:class:`~connectors.filedrop.scan.StabilityTracker`, and complete files are hashed and
emitted together with the checkpoint that marks them processed.

Bad entries never stop the source: a symlink loop or one pointing outside the directory, a
name that is not UTF-8 (S3 keys are), something that is not a regular file, a file that
cannot be read. Each is skipped with one warning naming it, counted
(:meth:`FiledropSource.statistics`), and tried again once it changes
(:class:`~connectors.filedrop.scan.Skips`). A full walk also deletes the checkpoints of
processed files it no longer finds, so they do not pile up.

All time comes from the context's clock: the waits, and the S3 ``sequencer``.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mode
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import anyio.to_thread
import msgspec

from connectors.filedrop.event import object_created_event
from streamfn.errors import SourceError
from streamfn.events.contract import SourceContext

from .config import FiledropConfig
from .scan import (
    Seen,
    Signature,
    Skips,
    StabilityTracker,
    format_sequencer,
    is_candidate,
    is_new,
    next_sequence,
    vanished,
)
from .watch import Watcher, open_watcher

TICK = 1.0  # seconds between looks when nothing happens
TAKE_CONCURRENCY = 32  # files hashed and emitted at once
INLINE_HASH_BYTES = 64 * 1024  # smaller files are hashed on the event loop (tens of µs)
_decode_seen = msgspec.msgpack.Decoder(Seen).decode
_encode = msgspec.msgpack.encode


class File(NamedTuple):
    """A regular file, as a look found it."""

    size: int
    mtime_ns: int
    signature: Signature


class Bad(NamedTuple):
    """An entry to skip: why, and the entry's version (None if even lstat failed)."""

    reason: str
    signature: Signature | None


Look = File | Bad | None
"""What a look at one entry found; None: nothing there (deleted, or a dangling symlink)."""


class _Survey(NamedTuple):
    looks: dict[str, Look]
    present: set[str] | None
    """Every file a full walk found (candidates or not); None when there was no full walk."""
    unreadable: list[str]
    """Directories the walk could not list ("" for the root)."""


@dataclass(frozen=True, slots=True)
class FiledropStatistics:
    processed: int
    """Files remembered as processed (one checkpoint each)."""
    pending: int
    """Files seen but not yet complete."""
    skipped: int
    """Bad entries skipped since the start (an unchanged entry counts once)."""
    skipped_now: int
    """Entries skipped at present."""
    pruned: int
    """Checkpoints of vanished files deleted since the start."""


class FiledropSource:
    def __init__(self, config: FiledropConfig) -> None:
        self._config = config
        self._seen: dict[str, Seen] = {}
        self._tracker = StabilityTracker(config.stable_for)
        self._skips = Skips()
        self._pruned = 0

    def statistics(self) -> FiledropStatistics:
        return FiledropStatistics(
            processed=len(self._seen),
            pending=len(self._tracker),
            skipped=self._skips.total,
            skipped_now=len(self._skips),
            pruned=self._pruned,
        )

    async def run(self, context: SourceContext) -> None:
        """Watch until cancelled. Raises SourceError if the directory cannot be used."""
        config = self._config
        root = await anyio.to_thread.run_sync(_prepare, context.root / config.path)
        self._context = context
        self._root = root
        self._bucket = config.bucket or _bucket_name(root.name)
        for key, value in (await context.get_checkpoints()).items():
            try:
                self._seen[key] = _decode_seen(value)
            except msgspec.DecodeError:
                context.log.warning("ignoring unreadable checkpoint of %s", _shown(key))
        context.log.info(
            "drop files into %s to invoke %s (bucket %r, %d file(s) already processed)",
            root,
            context.function,
            self._bucket,
            len(self._seen),
        )
        clock = context.clock
        watcher = open_watcher(root, clock)
        try:
            await self._turn(watcher, full=True, directories=[""], notices={}, due=[])
            last_walk = clock.time()
            while True:
                now = clock.time()
                deadline = self._tracker.next_deadline()
                wait = TICK if deadline is None else min(TICK, max(0.0, deadline - now))
                notices = await watcher.notices(wait)
                now = clock.time()
                full = now - last_walk >= config.rescan_interval or any(
                    notice.kind == "rescan" for notice in notices
                )
                if full:
                    last_walk = now
                renamed: dict[str, bool] = {}  # changed in any way wins over "moved in"
                directories: list[str] = []
                for notice in notices:
                    if notice.kind == "directory":
                        directories.append(notice.relative)
                    elif notice.kind == "deleted":
                        self._tracker.forget(notice.relative)
                        renamed.pop(notice.relative, None)
                    elif notice.kind != "rescan":
                        moved = notice.kind == "moved_in"
                        renamed[notice.relative] = renamed.get(notice.relative, moved) and moved
                due = self._tracker.due(now)
                await self._turn(
                    watcher, full=full, directories=directories, notices=renamed, due=due
                )
        finally:
            watcher.close()

    async def _turn(
        self,
        watcher: Watcher,
        *,
        full: bool,
        directories: list[str],
        notices: dict[str, bool],
        due: list[str],
    ) -> None:
        """One turn of the loop: look at the file system (in a thread), decide, take."""
        if not (full or directories or notices or due):
            return
        survey = await anyio.to_thread.run_sync(
            self._survey, watcher, full, directories, [*notices, *due]
        )
        context = self._context
        now = context.clock.time()
        for directory in survey.unreadable:
            if self._skips.note(directory + "/", "cannot list the directory", None):
                shown = f"{_shown(directory)}/" if directory else str(self._root)
                context.log.warning(
                    "skipping %s: cannot list the directory (its files keep their checkpoints)",
                    shown,
                )
        ready: dict[str, File] = {}
        for relative, look in survey.looks.items():
            if self._complete(relative, look, now, renamed=notices.get(relative, False)):
                assert isinstance(look, File)
                ready[relative] = look
        if survey.present is not None:
            await self._prune(survey.present, survey.unreadable)
        await self._take_all(ready)

    def _survey(
        self, watcher: Watcher, full: bool, directories: list[str], names: list[str]
    ) -> _Survey:
        """In a worker thread: watch new directories, walk, and look at what was named."""
        config = self._config
        for directory in directories:  # watch first: what is written after the walk is seen
            watcher.watch_tree(directory)
        unreadable: list[str] = []
        found: list[str] = []
        for directory in [""] if full else directories:
            found += self._walk(directory, unreadable)
        looks: dict[str, Look] = {}
        for relative in [*found, *names]:
            if relative not in looks and is_candidate(
                relative, prefix=config.prefix, suffix=config.suffix
            ):
                looks[relative] = look(self._root, relative)
        return _Survey(looks, set(found) if full else None, unreadable)

    def _walk(self, below: str, unreadable: list[str]) -> list[str]:
        """Files below ``below`` (blocking); directories that cannot be listed go to
        ``unreadable``."""
        root = self._root

        def failed(error: OSError) -> None:
            where = os.path.relpath(error.filename or root, root)
            where = "" if where == "." else where.replace(os.sep, "/")
            if where and isinstance(error, (FileNotFoundError, NotADirectoryError)):
                return  # it went away while walking: nothing there to miss
            unreadable.append(where)

        found: list[str] = []
        for directory, dirnames, filenames in os.walk(root / below, onerror=failed):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                relative = os.path.relpath(os.path.join(directory, name), root)
                if not relative.startswith(".."):
                    found.append(relative.replace(os.sep, "/"))
        found.sort()
        return found

    def _complete(self, relative: str, look: Look, now: float, *, renamed: bool = False) -> bool:
        """Record a sighting of a candidate file; True when it is new and complete."""
        if look is None:
            self._tracker.forget(relative)
            self._skips.clear(relative)
            return False
        if isinstance(look, Bad):
            self._tracker.forget(relative)
            self._skip(relative, look.reason, look.signature)
            return False
        if self._skips.unchanged(relative, look.signature) or not is_new(
            self._seen.get(relative), look.size, look.mtime_ns
        ):
            self._tracker.forget(relative)
            return False
        return self._tracker.observe(relative, look.size, look.mtime_ns, now, renamed=renamed)

    def _skip(self, relative: str, reason: str, signature: Signature | None) -> None:
        if self._skips.note(relative, reason, signature):
            self._context.log.warning("skipping %s: %s", _shown(relative), reason)

    async def _prune(self, present: set[str], unreadable: list[str]) -> None:
        """Delete the checkpoints of processed files a full walk no longer found."""
        self._skips.retain(present | {d + "/" for d in unreadable})
        for relative in vanished(list(self._seen), present, unreadable):
            await self._context.delete_checkpoint(relative)
            del self._seen[relative]
            self._pruned += 1

    async def _take_all(self, ready: dict[str, File]) -> None:
        """Hash and emit complete files, several at once (their events are independent;
        the store commits their writes together)."""
        if not ready:
            return
        limiter = anyio.CapacityLimiter(TAKE_CONCURRENCY)

        async def take(relative: str, file: File) -> None:
            async with limiter:
                await self._take(relative, file)

        async with anyio.create_task_group() as tg:
            for relative, file in ready.items():
                tg.start_soon(take, relative, file)

    async def _take(self, relative: str, file: File) -> None:
        context = self._context
        path = self._root / relative
        try:
            if file.size <= INLINE_HASH_BYTES:
                size, mtime_ns, etag = _hash(path)  # cheaper than a hop to a worker thread
            else:
                size, mtime_ns, etag = await anyio.to_thread.run_sync(_hash, path)
        except _Gone:
            context.log.warning(
                "skipping %s: deleted or rewritten before it was processed", _shown(relative)
            )
            return
        except OSError as exc:
            self._skip(relative, f"cannot read it: {exc.strerror or exc}", file.signature)
            return
        previous = self._seen.get(relative)
        if not is_new(previous, size, mtime_ns):
            return
        sequence = next_sequence(previous, int(context.clock.time() * 1e9))
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
        self._skips.clear(relative)


class _Gone(Exception):
    """The file vanished or changed while it was being read."""


def look(root: Path, relative: str) -> Look:
    """Look at one entry below ``root`` (blocking): a regular file, a bad entry, or nothing."""
    path = os.path.join(root, relative)
    try:
        entry = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Bad(f"cannot stat it: {exc.strerror or exc}", None)
    signature = _signature(entry)
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return Bad("its name is not UTF-8 (S3 object keys are)", signature)
    try:
        if stat_mode.S_ISLNK(entry.st_mode):
            if not Path(os.path.realpath(path)).is_relative_to(root):
                return Bad(f"symlink pointing outside {root}", signature)
            entry = os.stat(path)
            signature = _signature(entry)
    except FileNotFoundError:  # a dangling symlink: its target may come later
        return None
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, among others
        return Bad(f"cannot follow the symlink: {getattr(exc, 'strerror', None) or exc}", signature)
    if not stat_mode.S_ISREG(entry.st_mode):
        return Bad("not a regular file", signature)
    return File(entry.st_size, entry.st_mtime_ns, signature)


def _prepare(directory: Path) -> Path:
    """The watched directory, made absolute and created if missing. Raises SourceError."""
    root = Path(os.path.realpath(directory))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"filedrop: cannot use directory {root}: {exc}") from exc
    return root


def _signature(entry: os.stat_result) -> Signature:
    return (entry.st_dev, entry.st_ino, entry.st_size, entry.st_mtime_ns, entry.st_ctime_ns)


def _hash(path: Path) -> tuple[int, int, str]:
    """Size, mtime and MD5 of a file, read once. Raises _Gone if it vanished or changed
    meanwhile, OSError if it cannot be read."""
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


def _shown(relative: str) -> str:
    """A path as it can be logged: bytes that are not UTF-8 as ``\\xNN`` escapes."""
    return os.fsencode(relative).decode("utf-8", "backslashreplace")


def _bucket_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in ".-" else "-" for c in name.lower()).strip(".-")
    return cleaned[:63] or "bucket"
