"""filedrop's pure decisions: which files count, and when one is complete."""

from __future__ import annotations

import pytest

from connectors.filedrop.scan import (
    Seen,
    Skips,
    StabilityTracker,
    format_sequencer,
    is_candidate,
    is_new,
    next_sequence,
    vanished,
)

SECOND = 1_000_000_000


@pytest.mark.parametrize(
    ("relative", "prefix", "suffix", "expected"),
    [
        ("a.txt", "", "", True),
        ("dir/a.txt", "", "", True),
        (".hidden", "", "", False),
        ("dir/.cache/a.txt", "", "", False),
        ("a.txt.tmp", "", "", False),
        ("a.part", "", "", False),
        ("a.txt~", "", "", False),
        ("#a.txt#", "", "", False),
        ("a.crdownload", "", "", False),
        ("images/a.jpg", "images/", ".jpg", True),
        ("docs/a.jpg", "images/", ".jpg", False),
        ("images/a.png", "images/", ".jpg", False),
    ],
)
def test_candidates(relative: str, prefix: str, suffix: str, expected: bool) -> None:
    assert is_candidate(relative, prefix=prefix, suffix=suffix) is expected


def test_a_file_is_complete_when_unwritten_for_stable_for() -> None:
    tracker = StabilityTracker(stable_for=2.0)
    # written just now: wait
    assert not tracker.observe("a", 10, 100 * SECOND, now=100.1)
    assert tracker.next_deadline() == pytest.approx(102.1)
    assert tracker.due(101.0) == []
    # still growing: the window starts again
    assert not tracker.observe("a", 20, 101 * SECOND, now=101.5)
    assert tracker.due(102.2) == []
    # unchanged across the window: complete, and forgotten
    assert tracker.observe("a", 20, 101 * SECOND, now=103.5)
    assert "a" not in tracker and tracker.next_deadline() is None


def test_an_old_file_is_complete_at_first_sight() -> None:
    tracker = StabilityTracker(stable_for=2.0)
    assert tracker.observe("old", 5, 10 * SECOND, now=100.0)


def test_a_renamed_file_is_complete_at_once_unless_empty() -> None:
    tracker = StabilityTracker(stable_for=2.0)
    assert tracker.observe("r", 5, 100 * SECOND, now=100.0, renamed=True)
    assert not tracker.observe("empty", 0, 100 * SECOND, now=100.0, renamed=True)


def test_forget_drops_a_pending_file() -> None:
    tracker = StabilityTracker(stable_for=1.0)
    tracker.observe("a", 1, 100 * SECOND, now=100.0)
    tracker.forget("a")
    assert len(tracker) == 0


def test_rewritten_files_are_new_and_sequencers_increase_per_key() -> None:
    seen = Seen(size=3, mtime_ns=5, etag="e", sequence=1000)
    assert not is_new(seen, 3, 5)
    assert is_new(seen, 4, 5) and is_new(seen, 3, 6) and is_new(None, 3, 5)
    assert next_sequence(seen, now_ns=10) == 1001  # the clock went back: still increasing
    assert next_sequence(seen, now_ns=5000) == 5000
    assert format_sequencer(255) == "0000000000000000FF"


def test_a_skipped_entry_is_news_once_per_version_and_reason() -> None:
    skips = Skips()
    v1, v2 = (1, 2, 3, 4, 5), (1, 2, 3, 4, 6)  # chmod: only ctime moved
    assert skips.note("x", "cannot read it", v1)
    assert not skips.note("x", "cannot read it", v1)  # the next walk: no second warning
    assert skips.unchanged("x", v1) and not skips.unchanged("x", v2)
    assert skips.note("x", "cannot read it", v2)  # changed: tried again, and news again
    assert skips.note("x", "not a regular file", v2)
    assert skips.total == 3 and len(skips) == 1
    skips.clear("x")
    assert len(skips) == 0 and not skips.unchanged("x", v2)


def test_skips_are_forgotten_when_a_full_walk_no_longer_finds_them() -> None:
    skips = Skips()
    skips.note("a", "r", None)
    skips.note("b", "r", None)
    skips.retain({"b", "c"})
    assert len(skips) == 1 and not skips.note("b", "r", None)


def test_vanished_files_are_those_a_full_walk_did_not_find() -> None:
    seen = ["a.txt", "gone.txt", "sub/gone.txt", "locked/f.txt", "lockedness.txt"]
    present = {"a.txt"}
    assert vanished(seen, present, []) == [
        "gone.txt",
        "sub/gone.txt",
        "locked/f.txt",
        "lockedness.txt",
    ]
    # Below a directory that could not be listed nothing is known to be gone.
    assert vanished(seen, present, ["locked"]) == ["gone.txt", "sub/gone.txt", "lockedness.txt"]
    assert vanished(seen, present, [""]) == []  # the root itself
