"""Conformance checks for stream sources, for authors of stream connectors.

A stream connector's source passes :func:`check_stream_source` against its real backend
(a broker, a database) before the stream driver can rely on it::

    from streamfn.testing.streams import check_stream_source

    async def test_my_stream_source_conforms(my_stream):
        await check_stream_source(
            lambda: MySource(config),              # a new member of one group, no I/O
            append=my_stream.append,                # await append(partition, [b"v", ...])
            partitions=my_stream.partitions,        # at least two, all of the stream
        )

It drives two members of the same group through what the driver does (see
:mod:`streamfn.streams.contract`) and fails with an AssertionError naming the rule broken:

1. **assign**: after ``open``, the listener is told about every partition (the only member
   gets them all), each with its position;
2. **fetch**: records come in append order per partition with increasing offsets; a fetch
   that names partitions returns none of the others; an idle fetch returns ``{}`` within
   about ``max_wait``;
3. **pause / resume**: a paused partition's records are not fetched until it is resumed,
   while the others flow;
4. **commit and revoke**: when a second member joins, the first is told which partitions
   it loses and the source awaits the listener (slowed down on purpose) before the second
   member gets them; they start at the committed offsets, and a record appended after the
   commit is the first the new owner fetches;
5. **close**: ``aclose`` returns promptly, also a second time.

The waits are on real time (a real backend is being checked), at most 30 s a step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import anyio
from anyio.abc import TaskGroup

from streamfn.clock import SystemClock
from streamfn.invoke.destinations import DirDestination
from streamfn.streams.contract import StreamContext, StreamPosition, StreamSource
from streamfn.types import StreamRecord, TopicPartition

__all__ = ["check_stream_source"]

Append = Callable[[TopicPartition, Sequence[bytes]], Awaitable[None]]

REVOKE_DELAY = 1.0
"""Seconds the first member's listener takes to handle a revoke (the source must wait)."""


async def check_stream_source(
    make_source: Callable[[], StreamSource],
    *,
    append: Append,
    partitions: Sequence[TopicPartition],
) -> None:
    """Run the checks of the module docstring. ``make_source()`` gives a new, unopened
    source that joins the same group every call; ``append(partition, values)`` writes
    records to the stream and returns once they are stored; ``partitions`` are all the
    stream's partitions (two or more). Raises AssertionError on the first broken rule; each
    step waits at most 30 s (wrap the call in ``anyio.fail_after`` to bound the whole)."""
    assert len(partitions) >= 2, "check_stream_source needs a stream with two partitions"
    log: list[str] = []
    try:
        async with anyio.create_task_group() as tg:
            first = _Member("first", make_source(), log, tg)
            second = _Member("second", make_source(), log, tg)
            try:
                await _assign_fetch_pause(first, list(partitions), append)
                await _commit_and_revoke(first, second, list(partitions), append)
            finally:
                with anyio.move_on_after(30, shield=True):
                    await first.stop_pumping()
                    await second.stop_pumping()
                    await first.source.aclose()
                    await second.source.aclose()
    except BaseExceptionGroup as group:
        failures = group.subgroup(AssertionError)
        if failures is None:
            raise
        raise _first(failures) from None
    with anyio.fail_after(30):
        await first.source.aclose()  # a second close is harmless
        await second.source.aclose()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _assign_fetch_pause(
    first: _Member, partitions: list[TopicPartition], append: Append
) -> None:
    assert first.source.destination(DirDestination("failed")) is None, (
        "destination(): dir: is written by the engine; a source returns None for it"
    )
    await first.source.open(first, first.context)
    await first.until(lambda: set(first.owned) >= set(partitions), "assign: every partition")
    for tp in partitions:
        assert isinstance(first.owned[tp], StreamPosition), f"assign: {tp} without a position"

    values = {tp: [f"{tp}-{i}".encode() for i in range(5)] for tp in partitions}
    for tp, batch in values.items():
        await append(tp, batch)
    await first.until(
        lambda: all(len(first.values(tp)) >= 5 for tp in partitions), "fetch: 5 per partition"
    )
    for tp in partitions:
        assert first.values(tp) == values[tp], f"fetch: {tp} out of append order"
        offsets = [r.offset for r in first.records[tp]]
        assert offsets == sorted(set(offsets)), f"fetch: {tp} offsets not increasing"
        assert all(TopicPartition(r.topic, r.partition) == tp for r in first.records[tp]), (
            f"fetch: records under {tp} of another partition"
        )

    # As in the driver: pause between fetches, resume at any time; a fetch names partitions
    # when it starts.
    paused, flowing = partitions[0], partitions[1]
    await first.stop_pumping()
    first.source.pause([paused])
    first.start_pumping()
    await append(paused, [b"while-paused"])
    await append(flowing, [b"beside-paused"])
    await first.until(lambda: b"beside-paused" in first.values(flowing), "pause: others flow")
    await anyio.sleep(1.0)
    assert b"while-paused" not in first.values(paused), f"pause: {paused} fetched while paused"
    first.source.resume([paused])
    await first.until(lambda: b"while-paused" in first.values(paused), "resume: records again")

    await first.stop_pumping()
    first.only = [flowing]
    first.start_pumping()
    await append(paused, [b"left-out"])
    await append(flowing, [b"named"])
    await first.until(lambda: b"named" in first.values(flowing), "fetch(partitions): named")
    await anyio.sleep(1.0)
    assert b"left-out" not in first.values(paused), (
        f"fetch(partitions=[{flowing}]) returned records of {paused}"
    )
    await first.stop_pumping()
    first.only = None
    first.start_pumping()
    await first.until(lambda: b"left-out" in first.values(paused), "fetch: left-out later")

    await first.stop_pumping()
    started = anyio.current_time()
    idle = await first.source.fetch(0.5, 100)
    took = anyio.current_time() - started
    assert not idle, f"fetch: an idle fetch returned records {dict(idle)}"
    assert took < 5.0, f"fetch(max_wait=0.5) with nothing new took {took:.1f}s"


async def _commit_and_revoke(
    first: _Member, second: _Member, partitions: list[TopicPartition], append: Append
) -> None:
    ends = {tp: first.records[tp][-1].offset + 1 for tp in partitions}
    await first.source.commit(ends)
    first.start_pumping()
    first.revoke_delay = REVOKE_DELAY
    await second.source.open(second, second.context)
    second.start_pumping()
    await second.until(lambda: bool(second.owned), "revoke: the second member gets partitions")
    moved = set(second.owned)
    assert moved <= set(first.lost), (
        f"revoke: {sorted(moved - set(first.lost))} went to the second member without a "
        "revoke of the first"
    )
    revoked_at = max(first.log.index(f"first revoked {tp} done") for tp in moved)
    assigned_at = min(second.log.index(f"second assigned {tp}") for tp in moved)
    assert revoked_at < assigned_at, (
        "revoke: the new owner got partitions before the old owner's listener returned"
    )
    for tp in moved:
        start = second.owned[tp]
        assert start.committed == ends[tp], (
            f"commit: {tp} starts with committed={start.committed}, expected {ends[tp]}"
        )
    for tp in moved:
        await append(tp, [b"after-commit"])
    await second.until(
        lambda: all(second.values(tp)[:1] == [b"after-commit"] for tp in moved),
        "commit: the new owner starts at the committed offset",
    )
    for tp in moved:
        assert second.records[tp][0].offset == ends[tp], f"commit: {tp} started elsewhere"
    await first.stop_pumping()
    await second.stop_pumping()


class _Member:
    """One group member: its listener, and a task that fetches like the driver does."""

    def __init__(self, name: str, source: StreamSource, log: list[str], tg: TaskGroup) -> None:
        self.name = name
        self._tg = tg
        self.source = source
        self.log = log
        self.context = StreamContext(
            name=f"conformance-{name}",
            clock=SystemClock(),
            log=logging.getLogger(f"streamfn.testing.streams.{name}"),
            revoke_timeout=REVOKE_DELAY + 30,
        )
        self.owned: dict[TopicPartition, StreamPosition] = {}
        self.lost: list[TopicPartition] = []
        self.records: dict[TopicPartition, list[StreamRecord]] = {}
        self.only: list[TopicPartition] | None = None
        self.revoke_delay = 0.0
        self._pump: anyio.CancelScope | None = None  # the running fetch task's
        self._pumped = anyio.Event()  # set when that task has ended
        self._changed = anyio.Event()  # set when records or partitions came

    async def assigned(self, partitions: Mapping[TopicPartition, StreamPosition]) -> None:
        for tp, start in partitions.items():
            self.owned[tp] = start
            self.log.append(f"{self.name} assigned {tp}")
        self._changed.set()

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self.log.append(f"{self.name} revoked {tp}")
        await anyio.sleep(self.revoke_delay)
        for tp in partitions:
            self.owned.pop(tp, None)
            self.lost.append(tp)
            self.log.append(f"{self.name} revoked {tp} done")
        self._changed.set()

    def values(self, tp: TopicPartition) -> list[bytes | None]:
        return [r.value for r in self.records.get(tp, [])]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        if self._pump is None:
            self.start_pumping()
        with anyio.move_on_after(30):
            while not condition():
                await self._changed.wait()
                self._changed = anyio.Event()
            return
        raise AssertionError(f"{what}: not seen within 30s ({self.name} member)")

    def start_pumping(self) -> None:
        """Fetch in a task of its own from now on, as the driver's fetch loop does."""
        self._pump = anyio.CancelScope()
        self._pumped = anyio.Event()
        self._tg.start_soon(self._fetch_forever, self._pump, self._pumped)

    async def stop_pumping(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await self._pumped.wait()
            self._pump = None

    async def _fetch_forever(self, scope: anyio.CancelScope, done: anyio.Event) -> None:
        try:
            with scope:
                while True:
                    only = self.only
                    fetched = await self.source.fetch(0.2, 500, only)
                    for tp, records in fetched.items():
                        assert only is None or tp in only, (
                            f"fetch(partitions={only}) returned records of {tp}"
                        )
                        self.records.setdefault(tp, []).extend(records)
                    self._changed.set()
        finally:
            done.set()
