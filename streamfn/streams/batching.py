"""Cut the records of a stream into invocation batches, as Lambda's Kafka mapping does.

Theory of operation. Records of one partition are spread over ``parallelization_factor``
*lanes* by a stable hash of their key (CRC-32, so every process agrees); records with a
null key all go to lane 0, which keeps them in offset order among themselves. A lane is a
FIFO buffer with at most one batch in flight, so records of one key are invoked in offset
order. With ``parallelization_factor`` 1 a partition has exactly one lane. Batches never
mix partitions or lanes.

A lane's buffered records become a batch, taken from the front, as soon as any of these
holds and the lane has nothing in flight:

- it holds ``batch_size`` records;
- it holds ``max_bytes`` of estimated event size (see :func:`record_event_bytes`), so the
  next record would not fit;
- ``window_s`` has passed since its oldest record arrived (the Kafka rule: the window
  starts when the first record of the batch arrives, not when the previous batch ends).

A record whose estimated size alone exceeds ``max_bytes`` is never buffered: :meth:`add`
returns it as :class:`Oversize` and the driver writes it to the failure destination with
condition ``MaximumPayloadSizeExceeded`` and finishes its offset.

Driver contract (the aiokafka driver, one :class:`BatchBuilder` per mapping):

1. ``add(record, now)`` for each fetched record, in offset order per partition, after the
   offset tracker has tracked it and the filter has kept it.
2. ``ready(now)`` after adds, after ``done``, and when ``next_deadline()``
   passes; each returned batch is now in flight on its lane.
3. ``done(batch)`` once the batch is finished for good (committed, discarded, or partly
   finished and the rest discarded); the lane may then send its next batch.
4. ``drop_partition(tp)`` on revoke. Later ``done`` calls for batches of the
   dropped partition are ignored, so the driver need not race its workers.

``now`` is monotonic seconds. Nothing here reads a clock, sleeps or does I/O.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from streamfn.errors import ConfigError
from streamfn.types import StreamRecord, TopicPartition

MAX_EVENT_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit, which caps every batch."""

EVENT_OVERHEAD_BYTES = 4096
"""Reserved per event for the envelope: ``eventSource``, ``bootstrapServers`` (up to about
4000 characters of broker list) and braces."""

RECORD_OVERHEAD_BYTES = 192
"""Upper bound of one record's JSON apart from its topics, key, value and headers (186
bytes): field names, punctuation, 64-bit numbers at full width, ``"LOG_APPEND_TIME"``, and
the ``"topic-partition":[]`` group counted again for every record (hence the topic twice)."""

HEADER_OVERHEAD_BYTES = 8  # {"":[]}, and a comma


def record_event_bytes(record: StreamRecord) -> int:
    """Estimated bytes ``record`` adds to a Kafka-shaped event (:mod:`connectors.kafka.format`).

    Base64 key and value, header values as signed byte numbers (at most 5 characters each:
    ``-128,``) and the fixed parts at full width. It is an upper bound unless a header name
    holds characters JSON escapes (control characters, quotes, backslashes).
    """
    size = RECORD_OVERHEAD_BYTES + 2 * len(record.topic)
    if record.key is not None:
        size += 4 * ((len(record.key) + 2) // 3)
    if record.value is not None:
        size += 4 * ((len(record.value) + 2) // 3)
    for name, value in record.headers:
        size += HEADER_OVERHEAD_BYTES + len(name.encode()) + 5 * len(value)
    return size


class BatchPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a batch is cut. Defaults are Lambda's for Kafka."""

    batch_size: int = 100  # 1..10000 records
    max_bytes: int = MAX_EVENT_BYTES  # estimated event size, envelope included
    window_s: float = 0.5  # 0..300 s, from the arrival of the batch's first record
    parallelization_factor: int = 1  # 1..10 lanes per partition

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError(f"must be 1..10000 (got {self.batch_size})", path="batch_size")
        if not EVENT_OVERHEAD_BYTES < self.max_bytes <= MAX_EVENT_BYTES:
            raise ConfigError(
                f"must be {EVENT_OVERHEAD_BYTES + 1}..{MAX_EVENT_BYTES} (got {self.max_bytes})",
                path="max_bytes",
            )
        if not 0 <= self.window_s <= 300:
            raise ConfigError(f"must be 0..300 seconds (got {self.window_s})", path="window_s")
        if not 1 <= self.parallelization_factor <= 10:
            raise ConfigError(
                f"must be 1..10 (got {self.parallelization_factor})", path="parallelization_factor"
            )

    def lane_of(self, record: StreamRecord) -> int:
        """The lane of ``record`` within its partition: CRC-32 of the key; 0 for no key."""
        if self.parallelization_factor == 1 or record.key is None:
            return 0
        return zlib.crc32(record.key) % self.parallelization_factor


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """Records of one lane of one partition, in offset order, to invoke together."""

    id: int  # unique within its builder
    tp: TopicPartition
    lane: int
    records: tuple[StreamRecord, ...]
    payload_bytes: int  # estimated event size: an upper bound on the encoded event


class Oversize(msgspec.Struct, frozen=True, kw_only=True):
    """A record too large for any batch: for the failure destination, never invoked."""

    record: StreamRecord
    payload_bytes: int  # its estimated event size


class _Entry(NamedTuple):
    record: StreamRecord
    cost: int
    arrived: float


class _Lane:
    __slots__ = ("buffer", "bytes", "in_flight")

    def __init__(self) -> None:
        self.buffer: deque[_Entry] = deque()
        self.bytes = EVENT_OVERHEAD_BYTES
        self.in_flight: int | None = None  # id of the batch in flight


_LaneKey = tuple[TopicPartition, int]


class BatchBuilder:
    """Buffers records per lane and hands out batches; see the module docstring."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._lanes: dict[_LaneKey, _Lane] = {}  # only lanes with records or a batch in flight
        self._ids = itertools.count(1)
        self._count = 0
        self._bytes = 0  # records only, no envelope

    @property
    def buffered_count(self) -> int:
        """Records added and not yet handed out in a batch."""
        return self._count

    @property
    def buffered_bytes(self) -> int:
        """Estimated event bytes of the buffered records."""
        return self._bytes

    def add(self, record: StreamRecord, now: float) -> Oversize | None:
        """Buffer ``record`` (its arrival time is ``now``), or return it as :class:`Oversize`."""
        tp = TopicPartition(record.topic, record.partition)
        oversize = self.extend(tp, (record,), now)
        return oversize[0] if oversize else None

    def extend(
        self, tp: TopicPartition, records: Sequence[StreamRecord], now: float
    ) -> list[Oversize]:
        """:meth:`add` for records of one partition, in offset order; the hot path of a
        fetch (one lane lookup and one budget update per call, not per record)."""
        policy = self.policy
        room = policy.max_bytes - EVENT_OVERHEAD_BYTES
        single = self._lane((tp, 0)) if policy.parallelization_factor == 1 else None
        oversize: list[Oversize] = []
        count = total = 0
        for record in records:
            cost = record_event_bytes(record)
            if cost > room:
                oversize.append(Oversize(record=record, payload_bytes=EVENT_OVERHEAD_BYTES + cost))
                continue
            lane = single or self._lane((tp, policy.lane_of(record)))
            lane.buffer.append(_Entry(record, cost, now))
            lane.bytes += cost
            count += 1
            total += cost
        if count:
            self._buffered(count, total)
        return oversize

    def ready(self, now: float) -> list[Batch]:
        """Cut one batch from every idle lane that is due, and mark those lanes in flight."""
        batches = []
        policy = self.policy
        for key, lane in self._lanes.items():
            if lane.in_flight is not None or not lane.buffer:
                continue
            full = len(lane.buffer) >= policy.batch_size or lane.bytes >= policy.max_bytes
            if full or now >= lane.buffer[0].arrived + policy.window_s:
                batches.append(self._cut(key, lane))
        return batches

    def next_deadline(self) -> float | None:
        """When :meth:`ready` will next have something without further input; None if never.

        A value at or before ``now`` means "call ready() now".
        Lanes with a batch in flight are not counted: their ``done`` triggers the next look.
        """
        deadline = math.inf
        for lane in self._lanes.values():
            if lane.in_flight is not None or not lane.buffer:
                continue
            head = lane.buffer[0].arrived
            full = len(lane.buffer) >= self.policy.batch_size or lane.bytes >= self.policy.max_bytes
            deadline = min(deadline, head if full else head + self.policy.window_s)
        return None if deadline == math.inf else deadline

    def done(self, batch: Batch) -> None:
        """``batch`` is finished for good; its lane may send the next one."""
        key = (batch.tp, batch.lane)
        lane = self._lanes.get(key)
        if lane is None or lane.in_flight != batch.id:
            return  # the partition was dropped (revoked) meanwhile
        lane.in_flight = None
        if not lane.buffer:
            del self._lanes[key]

    def drop_partition(self, tp: TopicPartition) -> int:
        """Forget ``tp`` (revoked): its buffer is discarded, uncommitted. Returns the count."""
        dropped = 0
        for key in [key for key in self._lanes if key[0] == tp]:
            lane = self._lanes.pop(key)
            dropped += len(lane.buffer)
            self._bytes -= lane.bytes - EVENT_OVERHEAD_BYTES
        self._count -= dropped
        return dropped

    def _lane(self, key: _LaneKey) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        return lane

    def _buffered(self, count: int, cost: int) -> None:
        self._count += count
        self._bytes += cost

    def _cut(self, key: _LaneKey, lane: _Lane) -> Batch:
        limit, budget = self.policy.batch_size, self.policy.max_bytes
        records: list[StreamRecord] = []
        size = EVENT_OVERHEAD_BYTES
        buffer = lane.buffer
        while buffer and len(records) < limit and size + buffer[0].cost <= budget:
            entry = buffer.popleft()
            records.append(entry.record)
            size += entry.cost
        lane.bytes -= size - EVENT_OVERHEAD_BYTES
        self._buffered(-len(records), EVENT_OVERHEAD_BYTES - size)
        batch = Batch(
            id=next(self._ids), tp=key[0], lane=key[1], records=tuple(records), payload_bytes=size
        )
        lane.in_flight = batch.id
        return batch
