"""Pure decisions of the filedrop connector: which files count, and when one is complete.

Theory of operation. The source reports every sighting of a file (from the initial walk,
a change notification, or a re-check) as ``(relative path, size, mtime)`` with ``now``.
A file is *complete* when nobody has written it for ``stable_for`` seconds: either its
mtime is already that old, or its size and mtime stayed the same across sightings that
far apart. A file renamed into place is complete at once (the watcher tells a rename from a
write). Until then the :class:`StabilityTracker` holds it and says when to look
again (:meth:`StabilityTracker.next_deadline`).

A file already processed with the same size and mtime is not new; a rewritten file (other
size or mtime) is a new object and a new event.

Bad entries (a symlink loop, a name that is not UTF-8, a file that cannot be read) are bad
input, never a reason to stop: :class:`Skips` remembers each with the reason and the
entry's :data:`Signature`, so it is warned about and counted once, not at every walk, and
tried again once the entry changes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import msgspec

IGNORED_NAMES = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.swp",
    "*~",
    "#*#",
    "*.filepart",
    "*.download",
)


def is_candidate(relative: str, *, prefix: str = "", suffix: str = "") -> bool:
    """Whether a file (path relative to the watched directory, "/"-separated) should
    produce events: no dotfile or dot-directory in its path, not a temp name, and the S3
    notification rule's prefix/suffix filters match the key."""
    parts = relative.split("/")
    if any(part.startswith(".") for part in parts):
        return False
    name = parts[-1]
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_NAMES):
        return False
    return relative.startswith(prefix) and relative.endswith(suffix)


class Seen(msgspec.Struct, frozen=True, array_like=True):
    """What is remembered of a processed file (its checkpoint value)."""

    size: int
    mtime_ns: int
    etag: str
    sequence: int


def is_new(seen: Seen | None, size: int, mtime_ns: int) -> bool:
    return seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns)


def next_sequence(seen: Seen | None, now_ns: int) -> int:
    """The sequencer of a key's next event: increasing per key even if the clock is not."""
    return max(now_ns, seen.sequence + 1) if seen is not None else now_ns


def format_sequencer(sequence: int) -> str:
    return f"{sequence:018X}"


Signature = tuple[int, int, int, int, int]
"""What identifies a version of a directory entry: (device, inode, size, mtime_ns,
ctime_ns). Any write, chmod, rename or replacement changes it."""


class Skips:
    """Directory entries skipped as bad input: what was wrong and what the entry was then."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Signature | None]] = {}
        self.total = 0
        """Skips since the start; a skip of an entry that has not changed counts once."""

    def note(self, relative: str, reason: str, signature: Signature | None) -> bool:
        """Record a skip; True when it is news (the entry was not skipped for this reason
        in this version before): warn about it then."""
        if self._entries.get(relative) == (reason, signature):
            return False
        self._entries[relative] = (reason, signature)
        self.total += 1
        return True

    def unchanged(self, relative: str, signature: Signature) -> bool:
        """Whether ``relative`` was skipped in exactly this version: not worth another try."""
        entry = self._entries.get(relative)
        return entry is not None and entry[1] == signature

    def clear(self, relative: str) -> None:
        """The entry is fine now, or gone."""
        self._entries.pop(relative, None)

    def retain(self, present: set[str]) -> None:
        """Forget entries a full walk did not find."""
        for relative in [r for r in self._entries if r not in present]:
            del self._entries[relative]

    def __len__(self) -> int:
        return len(self._entries)


def vanished(seen: Iterable[str], present: set[str], unreadable: Iterable[str]) -> list[str]:
    """Processed files a full walk no longer found, whose checkpoints can go. Files below a
    directory the walk could not read (``unreadable``, "" for the root) are kept: they may
    well still be there."""
    blind = [d + "/" if d else "" for d in unreadable]
    return [
        relative
        for relative in seen
        if relative not in present and not any(relative.startswith(d) for d in blind)
    ]


class _Pending(msgspec.Struct):
    size: int
    mtime_ns: int
    since: float


class StabilityTracker:
    """Files seen but not yet complete."""

    def __init__(self, stable_for: float) -> None:
        self.stable_for = stable_for
        self._pending: dict[str, _Pending] = {}

    def observe(
        self, relative: str, size: int, mtime_ns: int, now: float, *, renamed: bool = False
    ) -> bool:
        """Record a sighting; True when the file is complete (it is then forgotten)."""
        if (renamed and size > 0) or now - mtime_ns / 1e9 >= self.stable_for:
            self._pending.pop(relative, None)
            return True
        pending = self._pending.get(relative)
        if pending is None or (pending.size, pending.mtime_ns) != (size, mtime_ns):
            self._pending[relative] = _Pending(size, mtime_ns, now)
            return False
        if now - pending.since >= self.stable_for:
            del self._pending[relative]
            return True
        return False

    def forget(self, relative: str) -> None:
        self._pending.pop(relative, None)

    def due(self, now: float) -> list[str]:
        """Pending files whose stability window has passed: look at them again."""
        return [rel for rel, p in self._pending.items() if now - p.since >= self.stable_for]

    def next_deadline(self) -> float | None:
        return min((p.since + self.stable_for for p in self._pending.values()), default=None)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, relative: object) -> bool:
        return relative in self._pending
