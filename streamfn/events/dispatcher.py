"""The async dispatcher: leases queued events and executes their lifecycle plans.

Theory of operation. One fetcher task leases due events of the functions this instance
runs, never more than there are free places (``max_concurrency``), so a flood of events
waits on disk, never in memory. For each leased event it first tries to take a
concurrency slot (:meth:`~streamfn.invoke.invoker.Invoker.try_acquire`, never waiting)
and asks :func:`~streamfn.events.lifecycle.decide` what to do; the events that got a
slot are begun together, one store transaction for the batch (``Begin``: look up the
key, count the attempt, extend the lease — the clocks start now, with the slot held).
Then each goes to one of ``max_concurrency`` worker tasks through a bounded stream. A
worker runs the rest of the plan — ``Run`` (invoke in the slot) — and hands the
resulting ``Settle`` (the decision and its destination records) to the
:class:`~streamfn.events.decisions.DecisionWriter`, which commits what has queued up in
one fenced transaction; only then is the outcome counted and logged. A function at its
reserved concurrency gets its event back with throttle backoff at once, so it holds no
worker and other functions' events go on. :meth:`Dispatcher.stop` ends only the
fetcher's waits, never a fetch step (lease → begin → hand over): an event leased when it
comes is still run, not left leased until its lease runs out. Nothing is shielded (the
store waits out an outage, so a shield could hold a stop up for as long as it lasts): a
fetch step *cancelled* (the drain timeout passed) releases its slots and leaves the events
it leased but did not begin to come back when their leases run out.

The dispatcher decides nothing itself: every edge, failure edges included, is in
:mod:`~streamfn.events.lifecycle`. What it adds is I/O discipline:

- a plan's write presents the event's lease token; a write answered "lease lost" ends the
  event here (another dispatcher owns it now);
- the store waits out an outage itself (:mod:`streamfn.state.outage`), so a decided
  outcome is recorded once the store is back; a store error (never retriable) ends the
  dispatcher;
- destination records reach their destination through the :class:`OutboxDriver`, never
  from here;
- housekeeping, every ``housekeeping_interval`` on the clock: expired idempotency records
  are deleted, and events of functions that *no* instance can be running any more (older
  than :data:`ORPHAN_AGE`, beyond the largest possible ``maximum_event_age`` plus the
  longest retry delay) are dropped and logged once per function: an instance never
  leases another function's events, so without this they would stay forever.

Every wait goes through the clock, so a FakeClock drives housekeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from streamfn.clock import wait_for_change
from streamfn.events.decisions import DecisionWriter
from streamfn.events.lifecycle import (
    Begin,
    Claimed,
    EventPolicy,
    Finished,
    Leased,
    Run,
    Settle,
    decide,
)
from streamfn.events.outbox import OutboxDriver
from streamfn.invoke.invoker import Slot
from streamfn.services import Services
from streamfn.state.base import QueuedEvent, Settlement
from streamfn.state.claims import Claim, ClaimState
from streamfn.types import InvocationRequest

__all__ = ["DispatchPolicy", "DispatchStatistics", "Dispatcher"]

_Work = tuple[QueuedEvent, "Slot | None", "Settle | Claim | None"]
"""A leased event for a worker: its slot and its first step (a Settle, or begin's answer)."""

log = logging.getLogger("streamfn.async")

ORPHAN_AGE = 21_600 + 7_200 + 3_600
"""Seconds after which an event of a function this instance does not run is dropped: the
largest ``maximum_event_age`` (6 h), plus the longest retry delay (2 h), plus an hour of
grace. Any instance that runs the function has aged such an event out (with its
on_failure record) long before."""


RECORDING_LIMIT = 4
"""Decided events whose outcome is being written, per place of ``max_concurrency``, before
the fetcher waits (backpressure from the store)."""


class DispatchPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The dispatcher's rules, built by the engine from the config."""

    functions: Mapping[str, EventPolicy]
    """The functions this instance runs; only their events are leased."""
    max_concurrency: int = 64
    batch: int = 64
    housekeeping_interval: float = 60.0

    @property
    def lease_for(self) -> float:
        """How long a lease lasts until ``begin`` extends it for the attempt."""
        return max((p.timeout + p.lease_margin for p in self.functions.values()), default=63.0)


class DispatchStatistics(msgspec.Struct, frozen=True, kw_only=True):
    received: int = 0
    succeeded: int = 0
    retried: int = 0
    throttled: int = 0
    duplicates: int = 0
    busy: int = 0
    dropped: Mapping[str, int] = {}
    lost_leases: int = 0
    expired_keys: int = 0
    orphans_dropped: int = 0
    destination_failures: int = 0
    delivered_records: int = 0


class Dispatcher:
    """Runs queued events to a decision (see the module docstring)."""

    def __init__(self, policy: DispatchPolicy, services: Services) -> None:
        self._policy = policy
        self._services = services
        self._functions = tuple(policy.functions)
        self._outbox = OutboxDriver(services)
        self._writer = DecisionWriter(services.store, self._written)
        self._stopping = False
        self._idle = anyio.CancelScope()  # the fetcher's current wait, ended by stop()
        self._drained = anyio.Event()
        self._free = anyio.Event()
        self._busy = 0  # leased, not yet decided
        self._recording = 0  # decided, being written
        self._plans: dict[tuple[int, int], Settle] = {}  # by (id, token), while written
        self._counts: dict[str, int] = {}
        self._orphaned: set[str] = set()

    def in_flight(self) -> int:
        """Events being worked on right now (running, or their outcome being recorded)."""
        return self._busy + self._recording

    def statistics(self) -> DispatchStatistics:
        counts = self._counts
        outbox = self._outbox.statistics()
        return DispatchStatistics(
            received=self._services.intake.received,
            succeeded=counts.get("succeeded", 0),
            retried=counts.get("retried", 0),
            throttled=counts.get("throttled", 0),
            duplicates=counts.get("duplicate", 0),
            busy=counts.get("busy", 0),
            dropped={k[8:]: v for k, v in counts.items() if k.startswith("dropped:")},
            lost_leases=counts.get("lost", 0),
            expired_keys=counts.get("expired", 0),
            orphans_dropped=counts.get("orphans", 0),
            destination_failures=outbox.failures,
            delivered_records=outbox.delivered,
        )

    async def drained(self) -> None:
        """Wait until :meth:`run` has returned after :meth:`stop`."""
        await self._drained.wait()

    def stop(self) -> None:
        """Lease nothing more; events already started (or being leased) run to their end."""
        self._stopping = True
        self._idle.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lease and run events until :meth:`stop`, then let the started ones finish, write
        their outcomes, and return. Store errors propagate."""
        places = self._policy.max_concurrency
        send, receive = anyio.create_memory_object_stream[_Work](places)
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(self._writer.run)
                background.start_soon(self._outbox.run)
                background.start_soon(self._housekeeping)
                async with anyio.create_task_group() as workers:
                    async with receive:
                        for _ in range(places):
                            workers.start_soon(self._worker, receive.clone())
                    task_status.started()
                    async with send:
                        await self._fetch(send)
                await self._writer.flushed()
                background.cancel_scope.cancel()
        finally:
            self._drained.set()

    async def _worker(self, receive: MemoryObjectReceiveStream[_Work]) -> None:
        async with receive:
            async for event, slot, step in receive:
                await self._process(event, slot, step)

    async def _fetch(self, work: MemoryObjectSendStream[_Work]) -> None:
        store, clock, intake = self._services.store, self._services.clock, self._services.intake
        while True:
            self._idle = anyio.CancelScope()
            if self._stopping:
                return
            free = self._policy.max_concurrency - self._busy
            if free <= 0 or self._recording >= RECORDING_LIMIT * self._policy.max_concurrency:
                self._free = anyio.Event()
                with self._idle:
                    await self._free.wait()
                continue
            changed = intake.changed
            limit = min(free, self._policy.batch)
            if await self._take(work, limit) == limit:  # stop() waits for this step
                continue
            with self._idle:
                due = await store.next_due(functions=self._functions)
                delay = 3600.0 if due is None else due - clock.time()
                if delay > 0:
                    await wait_for_change(changed, delay, clock)

    async def _take(self, work: MemoryObjectSendStream[_Work], limit: int) -> int:
        """Lease up to ``limit`` events, take their slots, begin those that got one (one
        store call for all) and hand each to a worker. Returns how many were leased.
        Cancelled, it releases the slots it took; what it leased and did not hand on comes
        back when the leases run out."""
        services = self._services
        events = await services.store.lease(
            now=services.clock.time(),
            limit=limit,
            lease_for=self._policy.lease_for,
            functions=self._functions,
        )
        now = services.clock.time()
        begins: list[tuple[QueuedEvent, Slot, float]] = []
        for event in events:
            slot = services.invoker.try_acquire(event.function)
            policy = self._policy.functions[event.function]
            plan = decide(event, Leased(slot is not None), now=now, policy=policy)
            self._busy += 1
            if isinstance(plan, Begin):
                assert slot is not None
                begins.append((event, slot, plan.lease_until))
                continue
            if slot is not None:
                slot.release()
            assert isinstance(plan, Settle)
            work.send_nowait((event, None, plan))  # room: never more than free places
        if not begins:
            return len(events)
        try:
            claims = await services.store.begin_many(
                [(event, until) for event, _, until in begins], now=now
            )
        except BaseException:
            # Nothing ran: the events come back when their leases run out (extended, if a
            # begin committed before the cancellation landed).
            for _, slot, _ in begins:
                slot.release()
            self._busy -= len(begins)
            self._free.set()
            raise
        for (event, slot, _), claim in zip(begins, claims, strict=True):
            work.send_nowait((event, slot, claim))
        return len(events)

    async def _process(
        self, event: QueuedEvent, slot: Slot | None, step: Settle | Claim | None
    ) -> None:
        """Run one event from its first plan (a Settle, or a begin's answer) to its
        decision, and hand that to the writer. Its place counts against
        ``max_concurrency`` until it is decided; recording has places of its own."""
        plan: Settle | None = None
        try:
            plan = step if isinstance(step, Settle) else await self._claimed(event, slot, step)
        finally:
            if slot is not None:
                slot.release()  # the slot is for running, not for recording
            self._busy -= 1
            if plan is not None:
                self._recording += 1
                self._plans[event.id, event.token] = plan
                self._writer.submit(event, plan.settlement)
            self._free.set()

    async def _claimed(
        self, event: QueuedEvent, slot: Slot | None, claim: Claim | None
    ) -> Settle | None:
        if claim is None:
            self._count("lost")
            return None
        assert slot is not None
        services, policy = self._services, self._policy.functions[event.function]
        if claim.state is ClaimState.NEW:
            event = msgspec.structs.replace(
                event, attempts=event.attempts + 1, invoke_count=event.invoke_count + 1
            )
        plan = decide(event, Claimed(claim), now=services.clock.time(), policy=policy)
        if isinstance(plan, Run):
            request = InvocationRequest(
                function=event.function, payload=event.payload, request_id=event.request_id
            )
            result = await services.invoker.run(slot, request)
            plan = decide(event, Finished(result), now=services.clock.time(), policy=policy)
        assert isinstance(plan, Settle)
        return plan

    def _written(self, event: QueuedEvent, settlement: Settlement, written: bool) -> None:
        """The writer committed (or fenced off) ``event``'s decision."""
        plan = self._plans.pop((event.id, event.token))
        self._recording -= 1
        self._free.set()
        if not written:
            self._count("lost")
            log.warning(
                "event %s of %s: its lease was lost (another instance has it); outcome %s"
                " not recorded here",
                event.request_id,
                event.function,
                plan.outcome,
            )
            return
        self._count(plan.outcome)
        if plan.message is not None:
            log.log(plan.level, "%s", plan.message)
        if settlement.requeue is not None or settlement.enqueue:
            self._services.intake.notify()  # the fetcher may be asleep until a later due time
        if settlement.records:
            self._outbox.notify()

    async def _housekeeping(self) -> None:
        store, clock = self._services.store, self._services.clock
        while True:
            now = clock.time()
            self._count("expired", await store.expire(now=now))
            dropped = await store.drop_orphans(
                keep=self._functions, enqueued_before=now - ORPHAN_AGE, now=now
            )
            self._count("orphans", len(dropped))
            for event in dropped:
                if event.function not in self._orphaned:
                    self._orphaned.add(event.function)
                    log.error(
                        "events of function %s older than %.0f h dropped (EventAgeExceeded):"
                        " no instance runs it, and its on_failure destination is not known"
                        " here (logged once per function)",
                        event.function,
                        ORPHAN_AGE / 3600,
                    )
            await clock.sleep(self._policy.housekeeping_interval)

    def _count(self, outcome: str, n: int = 1) -> None:
        self._counts[outcome] = self._counts.get(outcome, 0) + n
