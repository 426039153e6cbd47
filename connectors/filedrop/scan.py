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
"""

from __future__ import annotations

import fnmatch

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
