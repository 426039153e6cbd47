"""filedrop's pure decisions: which files count, and when one is complete."""

from __future__ import annotations

import pytest

from connectors.filedrop.scan import (
    Seen,
    StabilityTracker,
    format_sequencer,
    is_candidate,
    is_new,
    next_sequence,
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
