"""Row mapping both store backends share: column lists, rows to Structs, settle order.

The SQL differs per backend (placeholders, ``SKIP LOCKED``, ``RETURNING`` details); what a
row means does not, so it is written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from streamfn.state.base import OutboxEntry, QueuedEvent, Settlement
from streamfn.state.claims import ClaimState, IdempotencyRecord

__all__ = [
    "OUTBOX_FIELDS",
    "QUEUED_FIELDS",
    "enqueue_rows",
    "idempotency_record",
    "outbox_entries",
    "outbox_rows",
    "queued_events",
]

QUEUED_FIELDS = (
    "id", "function", "payload", "request_id", "idempotency_key", "idempotency_ttl",
    "enqueued_at", "attempts", "invoke_count", "throttles", "lease_token",
)  # fmt: skip
"""Columns a lease returns, in this order, followed by ``visible_at`` (for ordering)."""

OUTBOX_FIELDS = ("id", "destination", "record", "created_at", "attempts", "lease_token")
"""Columns an outbox lease returns, in this order, followed by ``visible_at``."""


def _by_due(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    return sorted(rows, key=lambda row: (row[-1], row[0]))  # RETURNING order is unspecified


def queued_events(rows: Iterable[Sequence[Any]]) -> list[QueuedEvent]:
    """Leased queue rows (:data:`QUEUED_FIELDS` + ``visible_at``), oldest first."""
    return [_queued(row) for row in _by_due(rows)]


def _queued(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(
        id=row[0], function=row[1], payload=bytes(row[2]), request_id=row[3],
        idempotency_key=row[4], idempotency_ttl=row[5], enqueued_at=row[6],
        attempts=row[7], invoke_count=row[8], throttles=row[9], token=row[10],
    )  # fmt: skip


def outbox_entries(rows: Iterable[Sequence[Any]]) -> list[OutboxEntry]:
    """Leased outbox rows (:data:`OUTBOX_FIELDS` + ``visible_at``), oldest first."""
    return [
        OutboxEntry(
            id=row[0],
            destination=row[1],
            record=bytes(row[2]),
            created_at=row[3],
            attempts=row[4],
            token=row[5],
        )
        for row in _by_due(rows)
    ]


def idempotency_record(row: Sequence[Any] | None) -> IdempotencyRecord | None:
    """A (state, lease_until, expires_at, result) row, or None for no row."""
    if row is None:
        return None
    state, lease_until, expires_at, result = row
    return IdempotencyRecord(
        state=ClaimState(state),
        lease_until=lease_until,
        expires_at=expires_at,
        result=None if result is None else bytes(result),
    )


def enqueue_rows(settlement: Settlement) -> list[tuple[object, ...]]:
    """Queue rows (function, payload, request_id, key, ttl, enqueued_at, visible_at) of a
    settlement's ``enqueue``."""
    now = settlement.now
    return [
        (e.function, e.payload, e.request_id, e.idempotency_key, e.idempotency_ttl, now, now)
        for e in settlement.enqueue
    ]


def outbox_rows(settlement: Settlement) -> list[tuple[object, ...]]:
    """Outbox rows (destination, record, created_at, visible_at) of a settlement."""
    now = settlement.now
    return [(r.destination, r.record, now, now) for r in settlement.records]
