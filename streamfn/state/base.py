"""The state store: one interface, an SQLite and a Postgres backend.

It holds four things, each with a guarantee the engine depends on:

- **The async queue.** Events from event sources (files, schedule ticks) and async invokes
  wait here. ``enqueue_many`` returns only after the events are committed, so a source may
  then mark its file or tick as taken. ``lease`` hands due events of the functions a
  dispatcher runs to it, each with a **lease token**; every later write about the event
  (``begin_many``, ``settle_many``) must present that token and is a no-op (returning
  None / False) when the event has been leased again since: a dispatcher whose lease ran
  out can no longer touch the event (fencing). An event leaves the queue only through a
  fenced settle, so a crash before that leads to redelivery, never loss.
- **Idempotency records** under (function, key), COMPLETED (done within its TTL, with the
  result) or, in state written by an older streamfn, IN_PROGRESS; see
  :mod:`streamfn.state.claims`. A queued event needs no IN_PROGRESS record: the queue
  holds one event per key and its fenced lease is the claim. ``begin_many`` reads the
  key's record (COMPLETED: a duplicate) and counts the attempt on the event before the
  handler starts, so an attempt that kills the engine still counts; a settle completes
  the key.
- **The outbox** of destination records: ``settle`` writes an event's decision (key
  completed, or the event discarded) and its destination records in one transaction; an
  outbox driver leases the records (``lease_outbox``) and delivers them on its own, so a
  failing destination never re-runs a handler.
- **Checkpoints** of event sources: small values under (source, key).

Times are epoch seconds (floats) from the engine's clock, passed in: the store never reads
a clock. An outage (the database unreachable or busy) is waited out inside the backend,
for as long as it lasts (:mod:`streamfn.state.outage`), so a call may be repeated after a
commit whose answer was lost: every method is safe to repeat. A method raises StateError
only for a failure that is not an outage, or after the store is closed (never
RetriableStateError). Cancellation of a call leaves the store consistent: each method is
one transaction, and a call waiting out an outage stops at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import msgspec

from streamfn.state.claims import Claim, ClaimState

__all__ = [
    "Claim",
    "ClaimState",
    "Completion",
    "DroppedEvent",
    "NewEvent",
    "OutboxEntry",
    "OutboxRecord",
    "QueuedEvent",
    "Requeue",
    "Settlement",
    "StateStore",
]


class QueuedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event in the async queue, as leased to a dispatcher."""

    id: int
    function: str
    payload: bytes
    request_id: str
    """Assigned at enqueue and kept across retries, as AWS keeps one requestId."""
    idempotency_key: str
    idempotency_ttl: float
    enqueued_at: float
    attempts: int = 0
    """Attempts started so far (counted by ``begin`` before the handler runs; throttles
    and attempts the runtime never started do not count)."""
    invoke_count: int = 0
    """Times the function was started (AWS's approximateInvokeCount)."""
    throttles: int = 0
    """Times the event went back because its function had no free concurrency."""
    token: int = 0
    """The lease token: later writes about this lease present it."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to queue (``enqueue_many``, or inside a settlement for a ``function:``
    destination record)."""

    function: str
    payload: bytes
    request_id: str
    idempotency_key: str
    idempotency_ttl: float = 3600.0
    checkpoint: tuple[str, str, bytes] | None = None
    """(source, key, value) written with it (``enqueue_many`` only)."""


class OutboxRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A destination record to deliver: ``destination`` is its URI, ``record`` its JSON."""

    destination: str
    record: bytes


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An outbox record as leased to the outbox driver."""

    id: int
    destination: str
    record: bytes
    created_at: float
    attempts: int = 0
    """Failed deliveries so far."""
    token: int = 0


class Requeue(msgspec.Struct, frozen=True, kw_only=True):
    """Put the event back, due at ``visible_at``, with these counters."""

    visible_at: float
    attempts: int
    invoke_count: int
    throttles: int


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """Mark the event's idempotency key COMPLETED with ``result`` until ``expires_at``."""

    result: bytes
    expires_at: float


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one decision about a leased event writes, in one transaction.

    ``requeue`` None removes the event from the queue; ``complete`` completes its key.
    ``records`` go into the outbox and ``enqueue`` into the queue (``function:``
    destinations), both at ``now``.
    """

    now: float
    requeue: Requeue | None = None
    complete: Completion | None = None
    records: tuple[OutboxRecord, ...] = ()
    enqueue: tuple[NewEvent, ...] = ()


class DroppedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event removed by ``drop_orphans``."""

    function: str
    request_id: str
    enqueued_at: float


class StateStore(Protocol):
    # --- async queue -------------------------------------------------------------------
    async def enqueue(
        self,
        *,
        function: str,
        payload: bytes,
        request_id: str,
        idempotency_key: str,
        idempotency_ttl: float,
        now: float,
        checkpoint: tuple[str, str, bytes] | None = None,
    ) -> bool:
        """Commit an event to the queue, visible at once. Returns False (and queues nothing)
        when an event with the same function and idempotency key is already queued.
        ``checkpoint`` (source, key, value) is written in the same transaction either way,
        so a source's "taken" mark and its event are durable together."""
        ...

    async def enqueue_many(self, events: Sequence[NewEvent], *, now: float) -> list[bool]:
        """:meth:`enqueue` for several events (each with its checkpoint), in one
        transaction; one answer each, in order."""
        ...

    async def lease(
        self,
        *,
        now: float,
        limit: int,
        lease_for: float,
        functions: Collection[str] | None = None,
    ) -> list[QueuedEvent]:
        """Take up to ``limit`` due events, oldest first, leased until ``now + lease_for``,
        each with a fresh token; an expired lease makes an event due again. Only events of
        ``functions`` are taken when given (an instance leases what it runs)."""
        ...

    async def next_due(self, *, functions: Collection[str] | None = None) -> float | None:
        """When ``lease`` (with the same ``functions``) next has something to return: the
        earliest ``visible_at`` of an unleased event or ``leased_until`` of a leased one
        (None: nothing queued)."""
        ...

    async def begin_many(
        self, attempts: Sequence[tuple[QueuedEvent, float]], *, now: float
    ) -> list[Claim | None]:
        """For each leased (event, lease_until), in one transaction, one answer each, in
        order: what a claim of the event's key means now (:func:`~streamfn.state.claims.
        decide_claim` on its stored record, writing no record: the lease is the claim); on
        NEW also count the attempt (``attempts`` and ``invoke_count`` + 1, absolute, so a
        repeated call counts once) and extend the lease to ``lease_until``. None (and
        nothing written) when the event's token is stale on NEW. (A stale token may still
        get a COMPLETED or IN_PROGRESS answer, as nothing is written for it: the settle
        that follows is fenced.)"""
        ...

    async def settle(self, event: QueuedEvent, settlement: Settlement) -> bool:
        """Write one decision about the leased ``event`` (see :class:`Settlement`) in one
        transaction. False (and nothing written) when ``event.token`` is not current."""
        ...

    async def settle_many(self, decisions: Sequence[tuple[QueuedEvent, Settlement]]) -> list[bool]:
        """:meth:`settle` for several (event, settlement), in one transaction (the
        dispatcher's group commit of decisions); one answer each, in order."""
        ...

    async def pending(self) -> int:
        """Number of events in the queue, leased or not."""
        ...

    async def drop_orphans(
        self, *, keep: Collection[str], enqueued_before: float, now: float, limit: int = 1000
    ) -> list[DroppedEvent]:
        """Remove up to ``limit`` events of functions not in ``keep`` that were enqueued
        before ``enqueued_before`` and are not leased at ``now`` (housekeeping of events
        no instance runs)."""
        ...

    # --- outbox --------------------------------------------------------------------------
    async def lease_outbox(self, *, now: float, limit: int, lease_for: float) -> list[OutboxEntry]:
        """Take up to ``limit`` due outbox records, oldest first, each with a fresh token."""
        ...

    async def outbox_next_due(self) -> float | None:
        """When ``lease_outbox`` next has something to return (None: the outbox is empty)."""
        ...

    async def outbox_done(self, entry_id: int, *, token: int) -> bool:
        """Remove a delivered record (fenced)."""
        ...

    async def outbox_retry(
        self, entry_id: int, *, token: int, visible_at: float, attempts: int
    ) -> bool:
        """Put a record whose delivery failed back, due at ``visible_at`` (fenced)."""
        ...

    # --- idempotency -------------------------------------------------------------------
    async def expire(self, *, now: float) -> int:
        """Delete idempotency records past their expiry; returns how many."""
        ...

    # --- checkpoints ---------------------------------------------------------------------
    async def get_checkpoints(self, source: str) -> Mapping[str, bytes]:
        """All checkpoint values of one source, by key."""
        ...

    async def put_checkpoint(self, source: str, key: str, value: bytes) -> None: ...

    async def setdefault_checkpoint(self, source: str, key: str, value: bytes) -> bytes:
        """Store ``value`` unless the key already has one; return the value stored. Several
        instances starting at once agree on one value (the first to commit wins)."""
        ...

    async def delete_checkpoint(self, source: str, key: str) -> None: ...
