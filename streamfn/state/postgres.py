"""The Postgres state store: one database shared by a fleet of streamfn processes.

Theory of operation
-------------------

``open_postgres_store(url)`` opens a small ``psycopg_pool.AsyncConnectionPool`` on a libpq
URL and creates the schema if it is missing (:mod:`streamfn.state.postgres_schema`). The
tables go into the first schema of the connection's ``search_path``, created if needed; a
URL can name it with libpq's own ``options`` parameter, which keeps deployments (and
tests) apart::

    postgresql://user@db.internal/streamfn?options=-csearch_path%3Dorders

Unlike the SQLite store, nothing owns the database: several instances use it at once, so
opening resets nothing. What a crashed instance held comes back by expiry alone: its queue
leases pass ``leased_until`` and make the events due again (a queued event's lease is its
claim: no IN_PROGRESS record is written).

Every method is one transaction on one pooled connection:

- ``lease`` picks due rows (unleased and visible, or with an expired lease) with
  ``FOR UPDATE SKIP LOCKED`` and marks them leased in the same statement, so instances
  leasing at the same moment get disjoint events and never wait on each other.
- ``begin_many`` reads each key's record (:func:`~streamfn.state.claims.decide_claim`) and
  counts the attempt fenced by the lease token, so only the current lease holder starts
  an attempt; ``settle_many`` writes each decision fenced the same way.
- ``enqueue`` dedupes on (function, idempotency_key) among queued events through a unique
  constraint, and writes its checkpoint in the same transaction.

Times are floats passed in by the caller; the store never reads a clock (``now()`` of the
database is never used). Calls are shielded from cancellation, as in the SQLite store: a
cancelled call still commits or rolls back whole before the cancellation lands.

Errors: operational problems (connection lost or refused, pool exhausted, serialization
failure, deadlock) are RetriableStateError; any other psycopg error raises StateError, both
chained to the psycopg exception. Messages name host, port and database, never the
password. Opening raises either. Once open, a call that fails with a retriable error is
retried with backoff for as long as the outage lasts (:mod:`streamfn.state.outage`, logged
once when it starts and once when it ends): the service waits for its database instead of
stopping. A connection lost mid-call may have committed the call's transaction, so a call
may run twice; each operation is written to be safe to repeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from streamfn.clock import Clock, SystemClock
from streamfn.errors import RetriableStateError, StateError
from streamfn.state._rows import (
    OUTBOX_FIELDS,
    QUEUED_FIELDS,
    enqueue_rows,
    idempotency_record,
    outbox_entries,
    outbox_rows,
    queued_events,
)
from streamfn.state.base import (
    Claim,
    ClaimState,
    DroppedEvent,
    NewEvent,
    OutboxEntry,
    QueuedEvent,
    Settlement,
)
from streamfn.state.claims import decide_claim
from streamfn.state.outage import OutageRetry
from streamfn.state.postgres_schema import create_schema

__all__ = ["PostgresStore", "open_postgres_store"]

_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_ENQUEUE = (
    "INSERT INTO streamfn_queue (function, payload, request_id, idempotency_key,"
    " idempotency_ttl, enqueued_at, visible_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (function, idempotency_key) DO NOTHING"
)
# Due: unleased and visible, or leased with the lease expired (oldest first either way).
_DUE = "((leased_until IS NULL AND visible_at <= %(now)s) OR leased_until <= %(now)s)"
_LEASE = (
    f"WITH picked AS (SELECT id FROM streamfn_queue WHERE {_DUE}{{only}}"
    " ORDER BY visible_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE streamfn_queue AS q SET leased_until = %(until)s, lease_token = q.lease_token + 1"
    " FROM picked WHERE q.id = picked.id"
    f" RETURNING {', '.join('q.' + f for f in QUEUED_FIELDS)}, q.visible_at"
)
_ONLY = " AND function = ANY(%(functions)s)"
_NEXT_DUE = "SELECT min(coalesce(leased_until, visible_at)) FROM streamfn_queue{where}"
_FENCE_REQUEUE = (
    "UPDATE streamfn_queue SET visible_at = %s, leased_until = NULL, attempts = %s,"
    " invoke_count = %s, throttles = %s WHERE id = %s AND lease_token = %s"
)
_FENCE_DELETE = "DELETE FROM streamfn_queue WHERE id = %s AND lease_token = %s"
_GET_RECORD = (
    "SELECT state, lease_until, expires_at, result FROM streamfn_idempotency"
    " WHERE function = %s AND key = %s"
)
_BEGIN_ATTEMPT = (
    "UPDATE streamfn_queue SET attempts = %s, invoke_count = %s, leased_until = %s"
    " WHERE id = %s AND lease_token = %s"
)
_ORPHANS = (
    "WITH picked AS (SELECT id FROM streamfn_queue WHERE enqueued_at < %s"
    " AND (leased_until IS NULL OR leased_until <= %s) AND NOT (function = ANY(%s))"
    " LIMIT %s FOR UPDATE SKIP LOCKED)"
    " DELETE FROM streamfn_queue AS q USING picked WHERE q.id = picked.id"
    " RETURNING q.function, q.request_id, q.enqueued_at"
)
_OUTBOX_INSERT = (
    "INSERT INTO streamfn_outbox (destination, record, created_at, visible_at)"
    " VALUES (%s, %s, %s, %s)"
)
_OUTBOX_LEASE = (
    "WITH picked AS (SELECT id FROM streamfn_outbox WHERE visible_at <= %(now)s"
    " AND (leased_until IS NULL OR leased_until <= %(now)s)"
    " ORDER BY visible_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE streamfn_outbox AS o SET leased_until = %(until)s, lease_token = o.lease_token + 1"
    " FROM picked WHERE o.id = picked.id"
    f" RETURNING {', '.join('o.' + f for f in OUTBOX_FIELDS)}, o.visible_at"
)
_OUTBOX_NEXT_DUE = (
    "SELECT min(greatest(visible_at, coalesce(leased_until, visible_at))) FROM streamfn_outbox"
)
_OUTBOX_DONE = "DELETE FROM streamfn_outbox WHERE id = %s AND lease_token = %s"
_OUTBOX_RETRY = (
    "UPDATE streamfn_outbox SET visible_at = %s, leased_until = NULL, attempts = %s"
    " WHERE id = %s AND lease_token = %s"
)
_COMPLETE = (
    "INSERT INTO streamfn_idempotency (function, key, state, expires_at, result)"
    " VALUES (%s, %s, 'completed', %s, %s) ON CONFLICT (function, key) DO UPDATE SET"
    " state = 'completed', lease_until = NULL, expires_at = excluded.expires_at,"
    " result = excluded.result"
)
_PUT_CHECKPOINT = (
    "INSERT INTO streamfn_checkpoints (source, key, value) VALUES (%s, %s, %s)"
    " ON CONFLICT (source, key) DO UPDATE SET value = excluded.value"
)


def describe(url: str) -> str:
    """``host:port/dbname`` of a libpq URL, for messages (never the password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable URL)"
    host, port = info.get("host") or "localhost", info.get("port") or "5432"
    return f"postgresql://{host}:{port}/{info.get('dbname') or ''}"


def _translate(where: str, op: str, exc: psycopg.Error) -> StateError:
    kind = RetriableStateError if isinstance(exc, psycopg.OperationalError) else StateError
    return kind(f"state store {where}: {op} failed: {str(exc).strip()}")


class PostgresStore:
    """A :class:`~streamfn.state.base.StateStore` in a Postgres database, shareable by many
    processes. Build it with :func:`open_postgres_store`; see the module docstring."""

    def __init__(
        self,
        where: str,
        pool: psycopg_pool.AsyncConnectionPool[_Conn],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._where = where
        self._pool = pool
        self._closed = False
        self._outage = OutageRetry(where, clock=clock or SystemClock())

    async def _run(self, op: str, body: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``body`` in one transaction on a pooled connection, committed on return.
        Every call goes through here; while the database is unreachable a call is retried
        until it is back (:class:`~streamfn.state.outage.OutageRetry`), so ``body`` may run
        again after a lost connection whose transaction had committed."""
        return await self._outage.run(op, lambda: self._attempt(op, body))

    async def _attempt(self, op: str, body: Callable[[_Conn], Awaitable[_T]]) -> _T:
        if self._closed:
            raise StateError(f"state store {self._where}: {op} after close")
        try:
            # A call is made whole even when cancelled: the cancellation lands after it,
            # having waited at most the pool's timeout for a connection.
            with anyio.CancelScope(shield=True):
                async with self._pool.connection() as conn, conn.transaction():
                    result = await body(conn)
        except psycopg.Error as exc:
            raise _translate(self._where, op, exc) from exc
        return result

    async def _execute(self, op: str, query: str, params: tuple[object, ...]) -> int:
        """One statement in its own transaction; returns the rows it changed."""

        async def body(conn: _Conn) -> int:
            return (await conn.execute(query, params)).rowcount

        return await self._run(op, body)

    async def aclose(self) -> None:
        """Close the pool. Idempotent; later calls raise StateError."""
        if not self._closed:
            self._closed = True
            await self._pool.close()

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
        row = (function, payload, request_id, idempotency_key, idempotency_ttl, now, now)

        async def body(conn: _Conn) -> bool:
            queued = (await conn.execute(_ENQUEUE, row)).rowcount == 1
            if checkpoint is not None:
                await conn.execute(_PUT_CHECKPOINT, checkpoint)
            return queued

        return await self._run("enqueue", body)

    async def enqueue_many(self, events: Sequence[NewEvent], *, now: float) -> list[bool]:
        async def body(conn: _Conn) -> list[bool]:
            queued = []
            for e in events:
                row = (e.function, e.payload, e.request_id, e.idempotency_key)
                inserted = await conn.execute(_ENQUEUE, (*row, e.idempotency_ttl, now, now))
                queued.append(inserted.rowcount == 1)
                if e.checkpoint is not None:
                    await conn.execute(_PUT_CHECKPOINT, e.checkpoint)
            return queued

        return await self._run("enqueue", body) if events else []

    async def lease(
        self,
        *,
        now: float,
        limit: int,
        lease_for: float,
        functions: Collection[str] | None = None,
    ) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        params: dict[str, object] = {"now": now, "limit": limit, "until": now + lease_for}
        query = _LEASE.format(only="" if functions is None else _ONLY)
        if functions is not None:
            params["functions"] = list(functions)

        async def body(conn: _Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, params)).fetchall()

        return queued_events(await self._run("lease", body))

    async def next_due(self, *, functions: Collection[str] | None = None) -> float | None:
        query = _NEXT_DUE.format(where="" if functions is None else " WHERE function = ANY(%s)")
        params: tuple[object, ...] = () if functions is None else (list(functions),)

        async def body(conn: _Conn) -> float | None:
            row = await (await conn.execute(query, params)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run("next_due", body)

    async def begin_many(
        self, attempts: Sequence[tuple[QueuedEvent, float]], *, now: float
    ) -> list[Claim | None]:
        async def body(conn: _Conn) -> list[Claim | None]:
            return [await _begin_in(conn, event, now, until) for event, until in attempts]

        return await self._run("begin", body) if attempts else []

    async def settle(self, event: QueuedEvent, settlement: Settlement) -> bool:
        [written] = await self.settle_many([(event, settlement)])
        return written

    async def settle_many(self, decisions: Sequence[tuple[QueuedEvent, Settlement]]) -> list[bool]:
        async def body(conn: _Conn) -> list[bool]:
            return [
                await _settle_in(conn, e.id, e.token, e.function, e.idempotency_key, settlement)
                for e, settlement in decisions
            ]

        return await self._run("settle", body) if decisions else []

    async def pending(self) -> int:
        async def body(conn: _Conn) -> int:
            row = await (await conn.execute("SELECT count(*) FROM streamfn_queue")).fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run("pending", body)

    async def drop_orphans(
        self, *, keep: Collection[str], enqueued_before: float, now: float, limit: int = 1000
    ) -> list[DroppedEvent]:
        params = (enqueued_before, now, list(keep), limit)

        async def body(conn: _Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(_ORPHANS, params)).fetchall()

        rows = await self._run("drop_orphans", body)
        return [DroppedEvent(function=f, request_id=r, enqueued_at=t) for f, r, t in rows]

    # --- outbox --------------------------------------------------------------------------
    async def lease_outbox(self, *, now: float, limit: int, lease_for: float) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit, "until": now + lease_for}

        async def body(conn: _Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(_OUTBOX_LEASE, params)).fetchall()

        return outbox_entries(await self._run("lease_outbox", body))

    async def outbox_next_due(self) -> float | None:
        async def body(conn: _Conn) -> float | None:
            row = await (await conn.execute(_OUTBOX_NEXT_DUE)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run("outbox_next_due", body)

    async def outbox_done(self, entry_id: int, *, token: int) -> bool:
        return await self._execute("outbox_done", _OUTBOX_DONE, (entry_id, token)) == 1

    async def outbox_retry(
        self, entry_id: int, *, token: int, visible_at: float, attempts: int
    ) -> bool:
        params = (visible_at, attempts, entry_id, token)
        return await self._execute("outbox_retry", _OUTBOX_RETRY, params) == 1

    # --- idempotency -------------------------------------------------------------------
    async def expire(self, *, now: float) -> int:
        """Delete COMPLETED records past ``expires_at`` and IN_PROGRESS claims past their
        lease (a claim treats either as absent); returns how many."""
        query = (
            "DELETE FROM streamfn_idempotency WHERE expires_at <= %s"
            " OR (state = 'in_progress' AND lease_until <= %s)"
        )
        return await self._execute("expire", query, (now, now))

    # --- checkpoints ---------------------------------------------------------------------
    async def get_checkpoints(self, source: str) -> Mapping[str, bytes]:
        query = "SELECT key, value FROM streamfn_checkpoints WHERE source = %s"

        async def body(conn: _Conn) -> dict[str, bytes]:
            rows = await (await conn.execute(query, (source,))).fetchall()
            return {key: bytes(value) for key, value in rows}

        return await self._run("get_checkpoints", body)

    async def put_checkpoint(self, source: str, key: str, value: bytes) -> None:
        await self._execute("put_checkpoint", _PUT_CHECKPOINT, (source, key, value))

    async def setdefault_checkpoint(self, source: str, key: str, value: bytes) -> bytes:
        async def body(conn: _Conn) -> bytes:
            await conn.execute(
                "INSERT INTO streamfn_checkpoints (source, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (source, key) DO NOTHING",
                (source, key, value),
            )
            cursor = await conn.execute(
                "SELECT value FROM streamfn_checkpoints WHERE source = %s AND key = %s",
                (source, key),
            )
            row = await cursor.fetchone()
            assert row is not None  # inserted above, or there before
            return bytes(row[0])

        return await self._run("setdefault_checkpoint", body)

    async def delete_checkpoint(self, source: str, key: str) -> None:
        query = "DELETE FROM streamfn_checkpoints WHERE source = %s AND key = %s"
        await self._execute("delete_checkpoint", query, (source, key))


async def _begin_in(
    conn: _Conn, event: QueuedEvent, now: float, lease_until: float
) -> Claim | None:
    """The key's claim state (no record is written: the lease is the claim); on NEW count
    the attempt and extend the lease, fenced: None when the token is stale."""
    found = await (
        await conn.execute(_GET_RECORD, (event.function, event.idempotency_key))
    ).fetchone()
    claim = decide_claim(idempotency_record(found), now)
    if claim.state is ClaimState.NEW:
        # Absolute counts, not "+ 1": a retry of a begin that did commit counts it once.
        counts = (event.attempts + 1, event.invoke_count + 1)
        counted = await conn.execute(_BEGIN_ATTEMPT, (*counts, lease_until, event.id, event.token))
        if counted.rowcount != 1:
            return None
    return claim


async def _settle_in(
    conn: _Conn, event_id: int, token: int, function: str, key: str, s: Settlement
) -> bool:
    """Write ``s`` for the leased event; False (nothing written) for a stale token."""
    if s.requeue is None:
        fenced = await conn.execute(_FENCE_DELETE, (event_id, token))
    else:
        r = s.requeue
        params = (r.visible_at, r.attempts, r.invoke_count, r.throttles, event_id, token)
        fenced = await conn.execute(_FENCE_REQUEUE, params)
    if fenced.rowcount != 1:
        return False
    if s.complete is not None:
        await conn.execute(_COMPLETE, (function, key, s.complete.expires_at, s.complete.result))
    async with conn.cursor() as cursor:
        if s.records:
            await cursor.executemany(_OUTBOX_INSERT, outbox_rows(s))
        if s.enqueue:
            await cursor.executemany(_ENQUEUE, enqueue_rows(s))
    return True


# --- opening ---------------------------------------------------------------------------


def _connection_defaults(connect_timeout: float) -> dict[str, object]:
    """libpq settings for pooled connections where the URL sets none: a bounded connect,
    and TCP keepalives that find a peer lost in a network partition in about half a minute
    (not the system's two hours), so that a call shielded on such a connection fails, and
    is retried, rather than waits."""
    return {
        "connect_timeout": max(1, round(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


@contextlib.asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    max_connections: int = 8,
    connect_timeout: float = 10.0,
    clock: Clock | None = None,
) -> AsyncIterator[PostgresStore]:
    """Open the store in the database at ``url`` (a libpq URL or conninfo string), creating
    its tables if needed. Other streamfn processes may have it open at the same time.

    ``max_connections`` bounds the pool (calls beyond it wait); ``connect_timeout`` is how long
    opening may take before raising RetriableStateError (as does an unreachable server or a
    refused login), and how long each attempt of a call waits for a pooled connection.
    Once open, a call rides out an outage: it is retried, with backoff waited on ``clock``
    (default: the system clock), until the database is back (:mod:`streamfn.state.outage`).
    Raises StateError for a malformed URL, or a schema newer than this streamfn
    understands. On exit the pool is closed.
    """
    where = describe(url)
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StateError(f"state store: invalid Postgres URL: {exc}") from exc
    defaults = _connection_defaults(connect_timeout)
    pool: psycopg_pool.AsyncConnectionPool[_Conn] = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_connections,
        timeout=connect_timeout,
        kwargs={"autocommit": True, **{k: v for k, v in defaults.items() if k not in given}},
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        # The pool's own reconnection backs off up to this long before it gives up on a
        # lost connection and lets a waiting call start afresh: short, so that the first
        # call after an outage finds the database within seconds.
        reconnect_timeout=connect_timeout,
        open=False,
        name="streamfn-state",
    )
    store = PostgresStore(where, pool, clock=clock)
    try:
        try:
            # Connect once directly first: a bad login fails here with its own message
            # rather than as a pool timeout.
            first = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            )
            async with first as conn, conn.transaction():
                await create_schema(conn)
            await pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            raise _translate(where, "open", exc) from exc
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()
