"""Commit cadence of a stream mapping: a frozen policy and its state, decided on ``now``."""

from __future__ import annotations

import pytest

from streamfn.errors import ConfigError
from streamfn.streams.commit import CommitPolicy
from streamfn.types import TopicPartition

MOVED = {TopicPartition("orders", 0): 42}


def test_commits_once_an_interval_has_passed_and_a_watermark_moved() -> None:
    state = CommitPolicy(interval_s=0.5).state(now=10.0)
    assert not state.should_commit(10.4, MOVED)
    assert state.should_commit(10.5, MOVED)
    assert not state.should_commit(11.0, {})  # nothing moved: nothing to commit


def test_the_next_interval_counts_from_the_last_commit() -> None:
    state = CommitPolicy(interval_s=0.5).state(now=10.0)
    assert state.next_check(10.0) == 10.5
    state.did_commit(10.7)
    assert not state.should_commit(11.1, MOVED)
    assert state.should_commit(11.2, MOVED)
    assert state.next_check(10.8) == 11.2


def test_a_check_with_nothing_to_commit_asks_again_an_interval_later() -> None:
    state = CommitPolicy(interval_s=2.0).state(now=0.0)
    assert state.next_check(2.0) == 4.0  # due, nothing was committable (or it failed)
    assert state.next_check(5.5) == 7.5
    assert state.should_commit(5.5, MOVED)  # still due once something moved


def test_a_failed_commit_is_not_reported_so_it_is_tried_again() -> None:
    state = CommitPolicy(interval_s=1.0).state(now=0.0)
    assert state.should_commit(1.0, MOVED)  # the commit fails: no did_commit
    assert state.should_commit(2.0, MOVED)


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_the_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ConfigError, match="commit_interval"):
        CommitPolicy(interval_s=interval)


def test_a_wake_a_rounding_step_before_the_deadline_still_commits() -> None:
    """A sleep of ``next_check(now) - now`` may end a hair early on a clock that adds the
    delay to its own count; that must not move the commit a whole interval."""
    start = 1_700_000_000.1
    state = CommitPolicy(interval_s=0.5).state(now=start)
    due = state.next_check(start)
    early = due - 1e-9
    assert state.should_commit(early, MOVED)
    assert state.next_check(early) == early + 0.5  # not due again at once
