"""Which offset of a partition is safe to commit.

Theory of operation. Every fetched record is *tracked* (its offset becomes pending) before
anything else happens to it, and *finished* once it has succeeded, been filtered out, or
been written to a failure destination. The committable offset is Kafka's "next offset to
read": the lowest pending offset, or one past the last tracked offset when nothing is
pending. So a commit never passes a record that is in flight, being retried, or waiting
for its failure record; a crash redelivers from there (at-least-once).

Offsets increase within a partition but may have gaps (compaction, transaction markers);
the watermark jumps over gaps because only tracked offsets can hold it back.

Cost: a deque of tracked offsets in order plus a set of the unfinished ones. ``track`` is
O(1); ``finish`` is amortized O(1) (each offset leaves the deque once). Memory is
proportional to the records between the watermark and the last fetched one, which the
driver bounds by pausing partitions.

Redelivery flow chosen with :mod:`streamfn.streams.batching` and
:mod:`streamfn.streams.retry`: a batch that fails, partly or wholly, stays in the driver's
hands and is re-invoked from memory; its records stay pending here and are never tracked
twice. Records fetched again after a seek are skipped by ``track_many``.

Driver contract: ``assign`` each partition and keep the :class:`PartitionOffsets` it
returns; ``track_many`` each fetch of it in offset order; ``finish_many`` records as they
end; ``to_commit()`` gives the partitions whose watermark advanced past the last commit;
commit those, then report them with ``committed``.

Late results: if a partition is revoked and assigned again while a batch of it is still in
flight, that batch finishes on the :class:`PartitionOffsets` captured when it was cut:
``revoke`` and ``assign`` detach the old object, so finishing on it changes nothing the new
assignment commits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from streamfn.types import TopicPartition


class PartitionOffsets:
    """The watermark of one partition."""

    __slots__ = ("_last_committed", "_next", "_open", "_order")

    def __init__(self, position: int | None = None, *, committed: int | None = None) -> None:
        """``position``: where fetching starts, if known; ``committed``: the group's
        committed offset, if any, so an unchanged watermark is not committed again."""
        self._order: deque[int] = deque()  # tracked offsets, ascending; head is unfinished
        self._open: set[int] = set()  # tracked and not finished
        self._next = position  # one past the last tracked offset
        self._last_committed = committed

    @property
    def pending(self) -> int:
        """Tracked records not finished yet."""
        return len(self._open)

    @property
    def last_committed(self) -> int | None:
        return self._last_committed

    def track(self, offset: int) -> None:
        """A record at ``offset`` was fetched. Offsets must increase (gaps are fine)."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} tracked out of order (expected >= {self._next})")
        self._order.append(offset)
        self._open.add(offset)
        self._next = offset + 1

    def track_many(self, offsets: Sequence[int]) -> int:
        """:meth:`track` for one fetch of the partition, in offset order. Offsets below the
        next expected one (fetched again after a seek) are skipped; returns how many were
        skipped, all at the front."""
        start = 0
        if self._next is not None:
            while start < len(offsets) and offsets[start] < self._next:
                start += 1
        fresh = offsets[start:] if start else offsets
        if fresh:
            self._order.extend(fresh)
            self._open.update(fresh)
            self._next = fresh[-1] + 1
        return start

    def finish(self, offset: int) -> None:
        """The record at ``offset`` is done: succeeded, filtered out, or sent to a destination."""
        self.finish_many((offset,))

    def finish_many(self, offsets: Iterable[int]) -> None:
        """:meth:`finish` for several records (a batch) at once."""
        still_open = self._open
        for offset in offsets:
            try:
                still_open.remove(offset)
            except KeyError:
                raise ValueError(f"offset {offset} is not pending") from None
        order = self._order
        while order and order[0] not in still_open:
            order.popleft()

    def committable(self) -> int | None:
        """The offset a commit may name now; None before anything was fetched or positioned."""
        return self._order[0] if self._order else self._next

    def to_commit(self) -> int | None:
        """:meth:`committable` if it is past the last commit, else None."""
        offset = self.committable()
        if offset is None or (self._last_committed is not None and offset <= self._last_committed):
            return None
        return offset

    def committed(self, offset: int) -> None:
        """``offset`` was committed to the broker."""
        if self._last_committed is None or offset > self._last_committed:
            self._last_committed = offset


class OffsetTracker:
    """:class:`PartitionOffsets` for every assigned partition of one consumer."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def assign(
        self, tp: TopicPartition, position: int | None = None, *, committed: int | None = None
    ) -> PartitionOffsets:
        """Start (or restart) tracking ``tp``; anything known about it before is forgotten."""
        offsets = self._partitions[tp] = PartitionOffsets(position, committed=committed)
        return offsets

    def revoke(self, tp: TopicPartition) -> None:
        """Stop tracking ``tp``: nothing more is committed for it."""
        self._partitions.pop(tp, None)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Partitions whose watermark moved past their last commit, with the offset to commit."""
        commits = {}
        for tp, offsets in self._partitions.items():
            offset = offsets.to_commit()
            if offset is not None:
                commits[tp] = offset
        return commits

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """These offsets were committed (the result of a successful commit of ``to_commit()``)."""
        for tp, offset in offsets.items():
            partition = self._partitions.get(tp)
            if partition is not None:
                partition.committed(offset)
