"""Flow control of a stream mapping: which partitions to fetch, when to stop, when to pause.

Theory of operation. The driver tells a :class:`FlowState` what changed and asks it what
to do; the state never awaits, reads no clock and does no I/O (``now`` is passed in).

- ``started(cost)`` / ``ended(cost)`` when a batch task starts and ends: ``cost`` is the
  estimated event bytes it holds in memory (a batch's payload, or an oversize record's
  size: those are charged too, as they sit in memory until their failure record is written).
- ``update(pending, buffered_bytes)`` after every change (records accepted, a batch
  started or ended): ``pending`` is each assigned partition's unfinished records
  (fetched, buffered, in flight or retrying). It returns a :class:`Change`.
- ``next_fetch(now, partitions)`` before every fetch: a :class:`Fetch` (which partitions,
  and which to pause at the source first) or a :class:`Stall` (fetch nothing; wait until
  ``until`` or a change).
- ``forget(partitions)`` when partitions are released (revoked, or the mapping stops).

The rules:

- A partition with ``max_pending`` or more unfinished records is **held**: fetches name
  only the others, so what the client prefetched for it waits there (one fetch response
  at most). When a held partition falls below the limit, :class:`Change` says ``widen``:
  a fetch that left it out is cut short so it is fetched again at once.
- When every partition is held, or the buffered and in-flight bytes reach
  ``max_pending_bytes``, the mapping is **stalled**: nothing is fetched until a change.
- A stall that lasts ``pause_after`` seconds **pauses** every partition at the source and
  fetching goes on (returning nothing): that keeps a Kafka consumer polling, and so in its
  group, without taking records. Pausing is kept for long stalls because it drops the
  client's prefetched data.
- When the stall ends, every paused partition is resumed (``Change.resume``).

So memory is bounded by those budgets plus one fetch, however slow the function is, and a
partition stuck on a failing record stops only itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

import msgspec

from streamfn.errors import ConfigError
from streamfn.types import TopicPartition

__all__ = ["Change", "Fetch", "FlowPolicy", "FlowState", "Stall"]


class FlowPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The driver's memory budgets (see the module docstring)."""

    max_pending: int = 1_000
    """Unfinished records per partition before it is held."""
    max_pending_bytes: int = 64 * 1024 * 1024
    """Estimated event bytes buffered and in flight, over all partitions."""
    pause_after: float = 30.0
    """Seconds of a stall before the partitions are paused at the source."""

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ConfigError(f"must be >= 1 (got {self.max_pending})", path="max_pending")
        if self.max_pending_bytes < 1:
            raise ConfigError(
                f"must be >= 1 (got {self.max_pending_bytes})", path="max_pending_bytes"
            )
        if self.pause_after < 0:
            raise ConfigError(f"must be >= 0 (got {self.pause_after})", path="pause_after")

    def state(self) -> FlowState:
        return FlowState(self)


class Fetch(NamedTuple):
    """Fetch now."""

    only: tuple[TopicPartition, ...] | None
    """The partitions to fetch; None for every assigned one."""
    pause: tuple[TopicPartition, ...] = ()
    """Pause these at the source before fetching."""


class Stall(NamedTuple):
    """Fetch nothing; wait for a change (a batch ending), at most until ``until``."""

    until: float


class Change(NamedTuple):
    """What the driver does after :meth:`FlowState.update`."""

    resume: tuple[TopicPartition, ...]
    """Resume these at the source (the stall that paused them is over)."""
    widen: bool
    """A held partition may flow again: cut a fetch that leaves it out short."""
    stalled: bool
    """Nothing may be fetched; when False, a stalled fetch loop may go on."""


class FlowState:
    """The flow-control state of one mapping; see the module docstring."""

    __slots__ = (
        "_held",
        "_in_flight",
        "_in_flight_bytes",
        "_paused",
        "_stalled_since",
        "policy",
        "stalled",
    )

    def __init__(self, policy: FlowPolicy) -> None:
        self.policy = policy
        self._held: frozenset[TopicPartition] = frozenset()
        self._paused: set[TopicPartition] = set()
        self._stalled_since: float | None = None  # when the current stall began (first seen)
        self._in_flight = 0
        self._in_flight_bytes = 0
        self.stalled = False  # nothing may be fetched now (as of the last update)

    @property
    def in_flight(self) -> int:
        """Batch tasks running (batches and oversize records)."""
        return self._in_flight

    @property
    def in_flight_bytes(self) -> int:
        return self._in_flight_bytes

    @property
    def held(self) -> frozenset[TopicPartition]:
        return self._held

    @property
    def paused(self) -> frozenset[TopicPartition]:
        return frozenset(self._paused)

    def started(self, cost: int) -> None:
        """A batch task holding ``cost`` bytes started."""
        self._in_flight += 1
        self._in_flight_bytes += cost

    def ended(self, cost: int) -> None:
        """The batch task of :meth:`started` with ``cost`` ended."""
        self._in_flight -= 1
        self._in_flight_bytes -= cost

    def update(self, pending: Mapping[TopicPartition, int], buffered_bytes: int) -> Change:
        """Re-evaluate the budgets: ``pending`` has every assigned partition's unfinished
        records, ``buffered_bytes`` the batch builder's buffered event bytes."""
        policy = self.policy
        held = frozenset(tp for tp, count in pending.items() if count >= policy.max_pending)
        widen = not held >= self._held
        self._held = held
        self.stalled = bool(pending) and (
            len(held) == len(pending)
            or buffered_bytes + self._in_flight_bytes >= policy.max_pending_bytes
        )
        resume: tuple[TopicPartition, ...] = ()
        if not self.stalled:
            self._stalled_since = None
            if self._paused:
                resume = tuple(sorted(self._paused))
                self._paused.clear()
        return Change(resume=resume, widen=widen, stalled=self.stalled)

    def next_fetch(self, now: float, partitions: Iterable[TopicPartition]) -> Fetch | Stall:
        """What the fetch loop does next at ``now``; ``partitions`` are the assigned ones."""
        if self.stalled:
            since = self._stalled_since = (
                now if self._stalled_since is None else self._stalled_since
            )
            if now - since < self.policy.pause_after:
                return Stall(until=since + self.policy.pause_after)
            pause = tuple(tp for tp in partitions if tp not in self._paused)
            self._paused.update(pause)
            return Fetch(only=None, pause=pause)  # a long stall: keep polling, paused
        self._stalled_since = None
        if not self._held or self._paused:
            return Fetch(only=None)
        return Fetch(only=tuple(tp for tp in partitions if tp not in self._held))

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """``partitions`` were released: they are neither held nor paused any more."""
        self._held = self._held.difference(partitions)
        self._paused.difference_update(partitions)
