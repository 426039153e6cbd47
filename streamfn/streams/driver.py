"""The driver of a stream event-source mapping: Lambda's Kafka mapping, self-hosted.

Theory of operation. One :class:`StreamMapping` owns one :class:`~streamfn.streams.contract.
StreamSource` and the pure mapper objects, and runs three kinds of task in one task group:

- the **fetch loop** asks the flow control (:mod:`streamfn.streams.flow`) what to fetch,
  and asks the source for records, waiting at most until the next batching deadline. Each
  record is *tracked* by the partition's offset tracker, matched against the filters (over
  the format's view of it; a filtered record is finished at once), and added to the batch
  builder; then the due batches are cut and started. Nothing awaits between a fetch
  returning and its records being tracked, so a rebalance never sees half a fetch.
- one **batch task** per batch in flight (:mod:`streamfn.streams.runner`): at most
  ``parallelization_factor`` per partition, as each lane has at most one batch in flight.
  When it ends it frees its lane and starts whatever became due.
- the **commit loop** commits, when the commit policy (:mod:`streamfn.streams.commit`)
  says so, each partition's watermark: the lowest offset not finished, so a commit never
  passes an in-flight, failing or buffered record and a crash redelivers from there.

Backpressure is decided by :class:`~streamfn.streams.flow.FlowState` (hold a partition at
``max_pending``, stall over ``max_pending_bytes``, pause after ``pause_after``, resume);
this module only applies its decisions: fetch the partitions it names, wait while it
stalls, pause and resume at the source, cut a narrowed fetch short when it says ``widen``.

Rebalance (:meth:`revoked`, awaited by the source inside its group protocol): the
partitions stop taking batches and drop their buffered records; in-flight batches may finish
for up to the function timeout (plus a grace period), then are cancelled; the watermark is
committed; only then does the call return and the group hand the partitions on. Stopping
the mapping (:meth:`stop`) is the same for every partition, bounded by ``drain_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import anyio
from anyio.abc import TaskGroup

from streamfn.clock import Clock
from streamfn.errors import ConfigError, SourceError
from streamfn.filtering import compile_filters
from streamfn.invoke.destinations import (
    Destination,
    DestinationWriter,
    DirDestination,
    FunctionDestination,
)
from streamfn.streams.batching import Batch, BatchBuilder, Oversize
from streamfn.streams.contract import (
    StreamContext,
    StreamDestination,
    StreamFormat,
    StreamPosition,
    StreamSource,
)
from streamfn.streams.flow import Stall
from streamfn.streams.offsets import OffsetTracker, PartitionOffsets
from streamfn.streams.policy import StreamMappingPolicy, StreamStatistics
from streamfn.streams.runner import BatchRunner, Counters, InvokeFn, wait_event
from streamfn.types import StreamRecord, TopicPartition

__all__ = ["StreamMapping", "StreamMappingPolicy", "StreamStatistics"]

CLOSE_TIMEOUT = 10.0
"""Seconds closing the source may take (leaving the group), even when the mapping is
cancelled."""


class _Partition:
    """An assigned partition: its watermark, and the tasks working on it."""

    __slots__ = ("idle", "offsets", "revoked", "scopes", "tasks", "tp")

    def __init__(self, tp: TopicPartition, offsets: PartitionOffsets) -> None:
        self.tp = tp
        self.offsets = offsets
        self.revoked = anyio.Event()  # set when it is being taken away (or the mapping stops)
        self.scopes: set[anyio.CancelScope] = set()
        self.tasks = 0
        self.idle = anyio.Event()
        self.idle.set()


class StreamMapping:
    """One event-source mapping over a stream source; see the module docstring.

    Implements :class:`~streamfn.streams.contract.StreamListener` for its source.
    """

    def __init__(
        self,
        *,
        name: str,
        policy: StreamMappingPolicy,
        source: StreamSource,
        format: StreamFormat,
        invoke: InvokeFn,
        destinations: DestinationWriter | None,
        function_arn: str,
        clock: Clock,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._source = source
        self._clock = clock
        self._log = log or logging.getLogger(f"streamfn.source.{name}")
        self._keep = _keeper(policy, format)
        self._builder = BatchBuilder(policy.batch)
        self._tracker = OffsetTracker()
        self._flow = policy.flow.state()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._counters = Counters()
        self._runner = BatchRunner(
            function=policy.function,
            function_arn=function_arn,
            retry=policy.retry,
            on_failure=policy.on_failure,
            format=format,
            invoke=invoke,
            destinations=destinations,
            sink=_sink(name, source, policy.on_failure),
            clock=clock,
            counters=self._counters,
            log=self._log,
            destination_retry=policy.destination_retry,
        )
        self._unstalled = anyio.Event()  # set when the flow control lets fetching go on
        self._fetching = anyio.CancelScope()
        self._narrow_fetch: anyio.CancelScope | None = None
        self._commit_lock = anyio.Lock()
        self._release_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self.started = anyio.Event()  # set once the source is open

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the source and run until :meth:`stop`; then drain, commit and close it.

        Raises what the source raises (SourceError), unwrapped from the task group."""
        try:
            await self._run()
        except BaseExceptionGroup as group:
            raise _sole(group)  # noqa: B904 - keeps the inner exception's own cause

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                with self._fetching:
                    await self._source.open(self, self._context())
                    self.started.set()
                    tg.start_soon(self._commit_loop)
                    await self._fetch_loop()
                drain = min(self.policy.drain_timeout, self._revoke_timeout)
                await self._release(list(self._partitions), drain_s=drain, why="stopping")
                tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await self._source.aclose()

    def _context(self) -> StreamContext:
        return StreamContext(
            name=self.name,
            clock=self._clock,
            log=self._log,
            revoke_timeout=self.policy.revoke_timeout,
        )

    def stop(self) -> None:
        """Stop fetching; :meth:`run` then drains, commits and returns."""
        self._fetching.cancel()

    def statistics(self) -> StreamStatistics:
        """A snapshot of the counters, and per assigned partition its last commit and lag."""
        c = self._counters
        committed, lag = {}, {}
        for tp, part in self._partitions.items():
            if (last := part.offsets.last_committed) is not None:
                committed[str(tp)] = last
            end, mark = self._source.end_offset(tp), part.offsets.committable()
            if end is not None and mark is not None:
                lag[str(tp)] = max(0, end - mark)
        return StreamStatistics(
            records_received=c.received,
            records_delivered=c.delivered,
            records_filtered=c.filtered,
            records_failed=c.failed,
            batches=c.batches,
            retries=c.retries,
            throttles=c.throttles,
            destination_errors=c.destination_errors,
            in_flight_batches=self._flow.in_flight,
            buffered_records=self._builder.buffered_count,
            paused_partitions=tuple(sorted(str(tp) for tp in self._flow.held | self._flow.paused)),
            committed=committed,
            offset_lag=lag,
        )

    # -- StreamListener -----------------------------------------------------------------------

    async def assigned(self, partitions: Mapping[TopicPartition, StreamPosition]) -> None:
        for tp, start in partitions.items():
            part = self._partitions.get(tp)
            if part is not None and part.offsets.committable() is not None:
                if start.committed is not None:  # records arrived before this call: keep them
                    part.offsets.committed(start.committed)
                continue
            self._register(tp, start)
        self._log.info(
            "assigned %s",
            ", ".join(
                f"{tp} at offset {start.position}"
                if start.position is not None
                else f"{tp} (from its first record at the starting position)"
                for tp, start in partitions.items()
            )
            or "no partitions",
        )

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        await self._release(partitions, drain_s=self._revoke_timeout, why="revoked")

    # -- fetching and dispatching -------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        policy, clock, flow = self.policy, self._clock, self._flow
        while True:
            wait = policy.fetch_wait
            deadline = self._builder.next_deadline()
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - clock.monotonic()))
            now = clock.monotonic()
            plan = flow.next_fetch(now, self._partitions)
            if isinstance(plan, Stall):
                # Nothing may be fetched: wait for a batch to end (or a deadline).
                self._unstalled = anyio.Event()
                await wait_event(clock, self._unstalled, min(wait, plan.until - now))
                self._progress()
                continue
            if plan.pause:
                self._source.pause(plan.pause)
            # A fetch that leaves held partitions out is cut short when one may flow again.
            with anyio.CancelScope() as self._narrow_fetch:
                if plan.only is None:
                    self._narrow_fetch = None
                fetched = await self._source.fetch(wait, policy.fetch_max_records, plan.only)
                self._accept(fetched)
            self._narrow_fetch = None
            self._progress()

    def _accept(self, fetched: Mapping[TopicPartition, Sequence[StreamRecord]]) -> None:
        if not fetched:
            return
        now = self._clock.monotonic()
        keep, counters = self._keep, self._counters
        for tp, records in fetched.items():
            part = self._partitions.get(tp)
            if part is None:
                part = self._register(tp, StreamPosition(None, None))
            elif part.revoked.is_set():
                continue
            offsets = part.offsets
            # Records fetched again after a seek are already tracked: they are skipped.
            skipped = offsets.track_many([record.offset for record in records])
            if skipped:
                records = records[skipped:]
            counters.received += len(records)
            accepted: Sequence[StreamRecord] = records
            if keep is not None:
                accepted = [r for r in records if keep(r)]
                if len(accepted) < len(records):
                    kept = {r.offset for r in accepted}
                    offsets.finish_many([r.offset for r in records if r.offset not in kept])
                    counters.filtered += len(records) - len(accepted)
            for oversize in self._builder.extend(tp, accepted, now):
                self._start(part, None, oversize)

    def _progress(self) -> None:
        """Start every batch that is due, and apply the flow control's decisions."""
        for batch in self._builder.ready(self._clock.monotonic()):
            self._start(self._partitions[batch.tp], batch, None)
        pending = {tp: part.offsets.pending for tp, part in self._partitions.items()}
        change = self._flow.update(pending, self._builder.buffered_bytes)
        if change.widen and self._narrow_fetch is not None:
            self._narrow_fetch.cancel()
        if change.resume:
            self._source.resume(change.resume)
        if not change.stalled:
            self._unstalled.set()

    def _start(self, part: _Partition, batch: Batch | None, oversize: Oversize | None) -> None:
        assert self._tg is not None
        part.tasks += 1
        if part.tasks == 1:
            part.idle = anyio.Event()
        # Charged now, before the task runs, so the next look at the budget sees it. An
        # oversize record is charged too: it stays in memory until its failure record is
        # written, which may take long when the destination is down.
        cost = batch.payload_bytes if batch is not None else 0
        if oversize is not None:
            cost = oversize.payload_bytes
        self._flow.started(cost)
        self._tg.start_soon(self._run_batch, part, batch, oversize, cost)

    async def _run_batch(
        self, part: _Partition, batch: Batch | None, oversize: Oversize | None, cost: int
    ) -> None:
        try:
            with anyio.CancelScope() as scope:
                part.scopes.add(scope)
                if batch is not None:
                    await self._runner.run(batch, part.offsets, part.revoked)
                elif oversize is not None:
                    await self._runner.run_oversize(oversize, part.offsets, part.revoked)
        finally:
            part.scopes.discard(scope)
            self._flow.ended(cost)
            part.tasks -= 1
            if part.tasks == 0:
                part.idle.set()
            if batch is not None:
                self._builder.done(batch)
        if not part.revoked.is_set():
            self._progress()

    def _register(self, tp: TopicPartition, start: StreamPosition) -> _Partition:
        offsets = self._tracker.assign(tp, start.position, committed=start.committed)
        part = self._partitions[tp] = _Partition(tp, offsets)
        return part

    # -- committing and releasing -------------------------------------------------------------

    async def _commit_loop(self) -> None:
        clock = self._clock
        cadence = self.policy.commit.state(clock.monotonic())
        while True:
            now = clock.monotonic()
            await clock.sleep(cadence.next_check(now) - now)
            now = clock.monotonic()
            if cadence.should_commit(now, self._tracker.to_commit()) and await self._commit():
                cadence.did_commit(now)

    async def _commit(self, only: Collection[TopicPartition] | None = None) -> bool:
        """Commit the watermarks that moved (of ``only``, if given); False if the source
        failed the commit (logged: the records are redelivered to the next owner)."""
        async with self._commit_lock:
            offsets = self._tracker.to_commit()
            if only is not None:
                offsets = {tp: offset for tp, offset in offsets.items() if tp in only}
            if not offsets:
                return True
            try:
                await self._source.commit(offsets)
            except SourceError as exc:
                self._log.warning("commit failed (%s); unfinished records are redelivered", exc)
                return False
            self._tracker.committed(offsets)
            self._log.debug("committed %s", _describe(offsets))
            return True

    async def _release(
        self, partitions: Collection[TopicPartition], *, drain_s: float, why: str
    ) -> None:
        """Stop, drain (for up to ``drain_s``), commit and forget ``partitions``."""
        async with self._release_lock:
            parts = [self._partitions[tp] for tp in partitions if tp in self._partitions]
            if not parts:
                return
            for part in parts:
                part.revoked.set()
                self._builder.drop_partition(part.tp)
            busy = sum(part.tasks for part in parts)
            if busy:
                self._log.info(
                    "%s: waiting up to %gs for %d in-flight batch(es)", why, drain_s, busy
                )
            deadline = self._clock.monotonic() + drain_s
            for part in parts:
                await wait_event(self._clock, part.idle, deadline - self._clock.monotonic())
            for part in parts:
                for scope in list(part.scopes):
                    scope.cancel()
                await part.idle.wait()
            await self._commit(only={part.tp for part in parts})
            for part in parts:
                self._tracker.revoke(part.tp)
                self._partitions.pop(part.tp, None)
            self._flow.forget([part.tp for part in parts])
            self._log.info(
                "%s: released %s",
                why,
                ", ".join(f"{part.tp} (committed {part.offsets.last_committed})" for part in parts),
            )

    @property
    def _revoke_timeout(self) -> float:
        return self.policy.revoke_timeout


def _keeper(
    policy: StreamMappingPolicy, format: StreamFormat
) -> Callable[[StreamRecord], bool] | None:
    """Whether a record passes the mapping's filters (over the format's view of it); None
    when there are no filters."""
    matches = compile_filters(policy.filters)
    if matches is None:
        return None
    view = format.filter_view
    return lambda record: matches(view(record))


def _sink(
    name: str, source: StreamSource, target: Destination | None
) -> StreamDestination | None:
    """The source's own writer of ``target``; None when the destination writer delivers it.
    Raises ConfigError for a scheme neither writes."""
    if target is None:
        return None
    sink = source.destination(target)
    if sink is None and not isinstance(target, DirDestination | FunctionDestination):
        raise ConfigError(
            f"{target.scheme}: destinations are not written by this source; "
            "use dir:PATH or function:NAME",
            path=f"{name}.on_failure",
        )
    return sink


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested groups, or the group if there are several."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group


def _describe(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp}@{offset}" for tp, offset in sorted(offsets.items()))
