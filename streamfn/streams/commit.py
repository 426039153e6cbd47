"""When a stream mapping commits its watermark: a frozen policy and its state, arroyo-style.

*What* may be committed is the offset tracker's business
(:meth:`~streamfn.streams.offsets.OffsetTracker.to_commit`); *when* is decided here. The
driver's commit loop asks :meth:`CommitPolicyState.next_check` how long to wait, then
:meth:`~CommitPolicyState.should_commit` with what is committable, commits if told to,
and reports a successful commit with :meth:`~CommitPolicyState.did_commit`. A failed
commit is not reported: the next check comes an interval later and commits again what is
committable then. Commits forced by a revoke or a stop do not go through the policy.

``now`` is monotonic seconds. Nothing here reads a clock, sleeps or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from streamfn.errors import ConfigError
from streamfn.types import TopicPartition

__all__ = ["CommitPolicy", "CommitPolicyState"]

_SLACK = 1e-6
"""Seconds a deadline counts as reached early: a sleep of ``due - now`` may end a rounding
step before ``due`` (clocks add the delay to their own count), which must not push the
commit a whole interval later."""


class CommitPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Commit at most every ``interval_s`` seconds, and only when the watermark moved."""

    interval_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError(f"must be > 0 (got {self.interval_s})", path="commit_interval")

    def state(self, now: float) -> CommitPolicyState:
        """A state that counts the first interval from ``now``."""
        return CommitPolicyState(self, now)


class CommitPolicyState:
    """When the current interval ends, and the decisions that follow from it."""

    __slots__ = ("_due", "policy")

    def __init__(self, policy: CommitPolicy, now: float) -> None:
        self.policy = policy
        self._due = now + policy.interval_s

    def should_commit(self, now: float, committable: Mapping[TopicPartition, int]) -> bool:
        """True when an interval has passed since the last commit and some partition's
        watermark moved past its last commit (``committable`` non-empty)."""
        return bool(committable) and now >= self._due - _SLACK

    def did_commit(self, now: float) -> None:
        """A commit succeeded at ``now``."""
        self._due = now + self.policy.interval_s

    def next_check(self, now: float) -> float:
        """When to ask :meth:`should_commit` again: at the end of the current interval, or
        a whole interval from ``now`` if that end has passed (nothing was committable)."""
        return self._due if self._due - _SLACK > now else now + self.policy.interval_s
