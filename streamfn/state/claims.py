"""Idempotency claims: the claim state machine, as a pure function.

Theory of operation
-------------------

An idempotency record lives under (function, key) in the state store. When a dispatcher
begins an attempt of a leased event (``StateStore.begin_many``), the store reads the key's
record and asks :func:`decide_claim` what a claim at ``now`` means, inside the
transaction that counts the attempt. This module never touches the store; it only decides.

A stored record is COMPLETED (``expires_at`` and ``result`` set, written by a settle that
completes the key) or IN_PROGRESS (``lease_until`` set). This streamfn writes no
IN_PROGRESS record — a queued event's fenced lease is its claim — but a state store
written by an older one may still hold some until they lapse or ``expire`` removes them.
NEW is never stored; it is the answer "no live record, the key is yours"::

    (no record)                     ──claim──► NEW            the caller's lease holds it
    IN_PROGRESS, now <  lease_until ──claim──► IN_PROGRESS    someone else is running it
    IN_PROGRESS, now >= lease_until ──claim──► NEW            the owner crashed or hung
    COMPLETED,   now <  expires_at  ──claim──► COMPLETED      with the stored result
    COMPLETED,   now >= expires_at  ──claim──► NEW            the TTL has passed
    (any)        ──settle, completing──► COMPLETED(result, expires_at)
    COMPLETED / stale IN_PROGRESS ──expire──► (no record)     housekeeping only

Boundaries are half-open: a lease or TTL that ends exactly at ``now`` has ended, the same
rule the async queue applies to leases. A missing ``lease_until`` or ``expires_at`` means
"never ends".

"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Claim", "ClaimState", "IdempotencyRecord", "decide_claim"]


class ClaimState(enum.Enum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class Claim(msgspec.Struct, frozen=True):
    state: ClaimState
    result: bytes | None = None
    """For COMPLETED: the response payload the completed invocation returned."""


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored idempotency record, as the store read it."""

    state: ClaimState
    """IN_PROGRESS or COMPLETED; a stored record is never NEW."""
    lease_until: float | None = None
    """For IN_PROGRESS: when the owner's claim lapses."""
    expires_at: float | None = None
    """For COMPLETED: when the completion stops counting."""
    result: bytes | None = None
    """For COMPLETED: the response payload of the completed invocation."""


_NEW = Claim(ClaimState.NEW)
_IN_PROGRESS = Claim(ClaimState.IN_PROGRESS)


def decide_claim(record: IdempotencyRecord | None, now: float) -> Claim:
    """What a claim at ``now`` means, given the stored ``record`` (None: no record).

    On NEW the caller's queue lease is the claim (nothing is stored for it).
    Raises ValueError for a stored NEW record, which the store never writes.
    """
    if record is None:
        return _NEW
    if record.state is ClaimState.IN_PROGRESS:
        if record.lease_until is not None and now >= record.lease_until:
            return _NEW
        return _IN_PROGRESS
    if record.state is ClaimState.COMPLETED:
        if record.expires_at is not None and now >= record.expires_at:
            return _NEW
        return Claim(ClaimState.COMPLETED, record.result)
    raise ValueError(f"a stored idempotency record is never {record.state.value!r}")
