"""The state store: one interface, an SQLite and a Postgres backend.

It holds three things, each with a guarantee the engine depends on:

- **The async queue.** Events from event sources (files, schedule ticks) and async invokes
  wait here. ``enqueue`` returns only after the event is committed, so a source may then
  mark its file or tick as taken. ``lease`` hands due events to one dispatcher at a time;
  an event leaves the queue only through ``ack`` (or ``finish``), so a crash at any point
  before that leads to redelivery, never loss.
- **Idempotency records.** ``claim`` turns a key into NEW (now in progress, owned by the
  caller until ``lease_until``), IN_PROGRESS (someone else holds it) or COMPLETED (done
  within its TTL, with the result). ``finish`` completes the key and acks its event in
  one transaction, so after a crash a completed key is never invoked again within its TTL.
- **Checkpoints** of event sources: small values under (source, key).

Times are epoch seconds (floats) from the engine's clock, passed in: the store never reads
a clock. Every method may raise StateError (RetriableStateError when the store is busy).
Cancellation of a call leaves the store consistent: each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from streamfn.state.claims import Claim, ClaimState

__all__ = ["Claim", "ClaimState", "QueuedEvent", "StateStore"]


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
    """Function-error attempts made so far (throttles do not count)."""
    invoke_count: int = 0
    """Times the function actually ran (AWS's approximateInvokeCount)."""


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

    async def lease(self, *, now: float, limit: int, lease_for: float) -> list[QueuedEvent]:
        """Take up to ``limit`` due, unleased events, oldest first, leased until
        ``now + lease_for``; an expired lease makes an event due again."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest event that is not leased becomes due (None: queue empty)."""
        ...

    async def retry_at(
        self, event_id: int, *, visible_at: float, attempts: int, invoke_count: int
    ) -> None:
        """Release a leased event to be leased again at ``visible_at``."""
        ...

    async def ack(self, event_id: int) -> None:
        """Remove an event from the queue (delivered, or recorded in a destination)."""
        ...

    async def pending(self) -> int:
        """Number of events in the queue, leased or not."""
        ...

    # --- idempotency -------------------------------------------------------------------
    async def claim(self, *, function: str, key: str, now: float, lease_until: float) -> Claim:
        """Claim ``key`` for one invocation (see the module docstring). An IN_PROGRESS record
        whose lease has passed, or a COMPLETED one past its expiry, is claimed anew."""
        ...

    async def release(self, *, function: str, key: str) -> None:
        """Drop an in-progress claim without completing it (the invocation failed)."""
        ...

    async def finish(
        self, event_id: int | None, *, function: str, key: str, result: bytes, expires_at: float
    ) -> None:
        """Mark ``key`` COMPLETED with ``result`` until ``expires_at`` and, in the same
        transaction, ack ``event_id`` when given."""
        ...

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
