"""Offset watermark: never commits past a record that is not finished."""

from __future__ import annotations

import random

import pytest

from streamfn.streams.offsets import OffsetTracker, PartitionOffsets
from streamfn.types import StreamRecord, TopicPartition

TP = TopicPartition("orders", 0)


def rec(offset: int, partition: int = 0) -> StreamRecord:
    return StreamRecord(topic="orders", partition=partition, offset=offset, timestamp_ms=0)


def test_nothing_to_commit_before_anything_is_known() -> None:
    offsets = PartitionOffsets()
    assert offsets.committable() is None and offsets.to_commit() is None


def test_position_alone_is_committable_unless_already_committed() -> None:
    assert PartitionOffsets(10).to_commit() == 10
    assert PartitionOffsets(10, committed=10).to_commit() is None


def test_watermark_stops_at_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for o in range(5):
        offsets.track(o)
    assert offsets.committable() == 0
    offsets.finish(1)
    offsets.finish(2)
    assert offsets.committable() == 0  # 0 is still in flight
    offsets.finish(0)
    assert offsets.committable() == 3
    offsets.finish(4)
    assert offsets.committable() == 3  # 3 failed and is being retried
    offsets.finish(3)
    assert offsets.committable() == 5  # next to read
    assert offsets.pending == 0


def test_gaps_are_jumped_over() -> None:
    offsets = PartitionOffsets(100)
    for o in (100, 103, 110):
        offsets.track(o)
    offsets.finish(100)
    assert offsets.committable() == 103
    offsets.finish(103)
    assert offsets.committable() == 110
    offsets.finish(110)
    assert offsets.committable() == 111


def test_filtered_records_finish_at_once() -> None:
    offsets = PartitionOffsets()
    offsets.track(0)
    offsets.finish(0)  # filtered out
    offsets.track(1)  # in a batch
    offsets.track(2)
    offsets.finish(2)  # filtered out
    assert offsets.committable() == 1
    offsets.finish(1)
    assert offsets.committable() == 3


def test_commit_only_when_the_watermark_advanced() -> None:
    offsets = PartitionOffsets(0)
    offsets.track(0)
    offsets.track(1)
    offsets.finish(0)
    assert offsets.to_commit() == 1
    offsets.committed(1)
    assert offsets.to_commit() is None
    offsets.committed(0)  # an older commit reported late does not move it back
    assert offsets.last_committed == 1
    offsets.finish(1)
    assert offsets.to_commit() == 2


def test_misuse_is_an_error() -> None:
    offsets = PartitionOffsets()
    offsets.track(5)
    with pytest.raises(ValueError, match="out of order"):
        offsets.track(5)
    with pytest.raises(ValueError, match="not pending"):
        offsets.finish(4)
    offsets.finish(5)
    with pytest.raises(ValueError, match="not pending"):
        offsets.finish(5)


def test_100k_pending_offsets_in_random_order_is_not_quadratic() -> None:
    offsets = PartitionOffsets(0)
    n = 100_000
    for o in range(n):
        offsets.track(2 * o)  # gaps everywhere
    order = list(range(n))
    random.Random(7).shuffle(order)
    low = 0
    finished = set()
    for i, o in enumerate(order):
        offsets.finish(2 * o)
        finished.add(o)
        if i % 10_000 == 0:
            while low in finished:
                low += 1
            assert offsets.committable() == (2 * low if low < n else 2 * n - 1)
    assert offsets.pending == 0 and offsets.committable() == 2 * n - 1


def test_tracker_commits_per_partition() -> None:
    tracker = OffsetTracker()
    p0 = tracker.assign(TP, 0, committed=0)
    p1 = tracker.assign(TopicPartition("orders", 1))
    for o in range(3):
        p0.track(o)
        p1.track(o)
    p0.finish_many([0, 1])
    p1.finish(0)
    assert p0.pending + p1.pending == 3
    commits = tracker.to_commit()
    assert commits == {TP: 2, TopicPartition("orders", 1): 1}
    tracker.committed(commits)
    assert tracker.to_commit() == {}


def test_a_revoked_partition_is_not_committed_and_its_late_finishes_change_nothing() -> None:
    tracker = OffsetTracker()
    old = tracker.assign(TP)
    old.track(0)
    tracker.revoke(TP)
    tracker.committed({TP: 1})  # ignored
    assert tracker.to_commit() == {}
    new = tracker.assign(TP, 0)
    new.track(0)
    old.finish(0)  # a batch captured the old object: the new assignment is untouched
    assert new.committable() == 0 and tracker.to_commit() == {TP: 0}


def test_track_many_skips_what_a_seek_fetched_again_and_finish_many_moves_the_watermark() -> None:
    offsets = PartitionOffsets(10)
    assert offsets.track_many([10, 11, 12, 14]) == 0
    assert offsets.track_many([12, 14, 15]) == 2  # fetched again after a seek: skipped
    assert offsets.pending == 5
    offsets.finish_many([11, 10, 14])
    assert offsets.committable() == 12
    offsets.finish_many([12, 15])
    assert offsets.committable() == 16
    with pytest.raises(ValueError, match="offset 12 is not pending"):
        offsets.finish_many([12])
