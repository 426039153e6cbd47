"""The Postgres state store: one database shared by a fleet of streamfn processes.

Theory of operation
-------------------

``open_postgres_store(url)`` opens a small ``psycopg_pool.AsyncConnectionPool`` on a libpq
URL and creates the schema if it is missing (``CREATE ... IF NOT EXISTS`` under a
transaction-level advisory lock, so instances starting together do not race). The tables
go into the first schema of the connection's ``search_path``, created if needed; a URL can
name it with libpq's own ``options`` parameter, which keeps deployments (and tests) apart::

    postgresql://user@db.internal/streamfn?options=-csearch_path%3Dorders

Unlike the SQLite store, nothing owns the database: several instances use it at once, so
opening resets nothing. What a crashed instance held comes back by expiry alone: its queue
leases pass ``leased_until`` and make the events due again, its IN_PROGRESS claims pass
``lease_until`` and are claimed anew (see :func:`~streamfn.state.claims.decide_claim`).

Every method is one transaction on one pooled connection:

- ``lease`` picks due rows (unleased and visible, or with an expired lease) with
  ``FOR UPDATE SKIP LOCKED`` and marks them leased in the same statement, so instances
  leasing at the same moment get disjoint events and never wait on each other.
- ``claim`` first tries to insert an IN_PROGRESS record (``ON CONFLICT DO NOTHING``); when a
  record exists it locks it (``SELECT ... FOR UPDATE``), applies ``decide_claim`` and
  overwrites it on NEW. A concurrent insert of the same key waits for the first to commit,
  so two instances never both get NEW for one key.
- ``enqueue`` dedupes on (function, idempotency_key) among queued events through a unique
  constraint, and writes its checkpoint in the same transaction.

Times are floats passed in by the caller; the store never reads a clock (``now()`` of the
database is never used). Calls are shielded from cancellation, as in the SQLite store: a
cancelled call still commits or rolls back whole before the cancellation lands.

Errors: operational problems (connection lost or refused, pool exhausted, serialization
failure, deadlock) raise RetriableStateError; any other psycopg error raises StateError,
both chained to the psycopg exception. Messages name host, port and database, never the
password.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.base import Claim, ClaimState, QueuedEvent
from streamfn.state.claims import IdempotencyRecord, decide_claim

__all__ = ["PostgresStore", "open_postgres_store"]

_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]

SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streamfn_schema (version integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS streamfn_queue (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, function text NOT NULL,
        payload bytea NOT NULL, request_id text NOT NULL, idempotency_key text NOT NULL,
        idempotency_ttl double precision NOT NULL, enqueued_at double precision NOT NULL,
        visible_at double precision NOT NULL, leased_until double precision,
        attempts integer NOT NULL DEFAULT 0, invoke_count integer NOT NULL DEFAULT 0,
        UNIQUE (function, idempotency_key))""",
    """CREATE INDEX IF NOT EXISTS streamfn_queue_due ON streamfn_queue (visible_at, id)
        WHERE leased_until IS NULL""",
    """CREATE INDEX IF NOT EXISTS streamfn_queue_leased ON streamfn_queue (leased_until)
        WHERE leased_until IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS streamfn_idempotency (
        function text NOT NULL, key text NOT NULL,
        state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
        lease_until double precision, expires_at double precision, result bytea,
        PRIMARY KEY (function, key))""",
    """CREATE INDEX IF NOT EXISTS streamfn_idempotency_expiry ON streamfn_idempotency
        (expires_at) WHERE expires_at IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS streamfn_checkpoints (
        source text NOT NULL, key text NOT NULL, value bytea NOT NULL,
        PRIMARY KEY (source, key))""",
)

_QUEUED_FIELDS = (
    "id", "function", "payload", "request_id", "idempotency_key", "idempotency_ttl",
    "enqueued_at", "attempts", "invoke_count",
)  # fmt: skip
_ENQUEUE = (
    "INSERT INTO streamfn_queue (function, payload, request_id, idempotency_key,"
    " idempotency_ttl, enqueued_at, visible_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (function, idempotency_key) DO NOTHING"
)
# Due: unleased and visible, or leased with the lease expired (oldest first either way).
_LEASE = (
    "WITH picked AS (SELECT id FROM streamfn_queue"
    " WHERE (leased_until IS NULL AND visible_at <= %(now)s) OR leased_until <= %(now)s"
    " ORDER BY visible_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE streamfn_queue AS q SET leased_until = %(until)s FROM picked WHERE q.id = picked.id"
    f" RETURNING {', '.join('q.' + f for f in _QUEUED_FIELDS)}, q.visible_at"
)
_NEXT_DUE = "SELECT min(coalesce(leased_until, visible_at)) FROM streamfn_queue"
_RETRY = (
    "UPDATE streamfn_queue SET visible_at = %s, leased_until = NULL, attempts = %s,"
    " invoke_count = %s WHERE id = %s"
)
_INSERT_CLAIM = (
    "INSERT INTO streamfn_idempotency (function, key, state, lease_until)"
    " VALUES (%s, %s, 'in_progress', %s) ON CONFLICT (function, key) DO NOTHING"
)
_LOCK_RECORD = (
    "SELECT state, lease_until, expires_at, result FROM streamfn_idempotency"
    " WHERE function = %s AND key = %s FOR UPDATE"
)
_RENEW_CLAIM = (
    "UPDATE streamfn_idempotency SET state = 'in_progress', lease_until = %s,"
    " expires_at = NULL, result = NULL WHERE function = %s AND key = %s"
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

    def __init__(self, where: str, pool: psycopg_pool.AsyncConnectionPool[_Conn]) -> None:
        self._where = where
        self._pool = pool
        self._closed = False

    async def _run(self, op: str, body: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``body`` in one transaction on a pooled connection, committed on return."""
        if self._closed:
            raise StateError(f"state store {self._where}: {op} after close")
        try:
            with anyio.CancelScope(shield=True):  # a started transaction is waited for
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

    async def lease(self, *, now: float, limit: int, lease_for: float) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit, "until": now + lease_for}

        async def body(conn: _Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(_LEASE, params)).fetchall()

        rows = await self._run("lease", body)
        rows.sort(key=lambda row: (row[-1], row[0]))  # RETURNING order is unspecified
        return [QueuedEvent(**dict(zip(_QUEUED_FIELDS, row, strict=False))) for row in rows]

    async def next_due(self) -> float | None:
        """The earliest ``visible_at`` of an unleased event or ``leased_until`` of a leased
        one: when ``lease`` next has something to return (None: queue empty)."""

        async def body(conn: _Conn) -> float | None:
            row = await (await conn.execute(_NEXT_DUE)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run("next_due", body)

    async def retry_at(
        self, event_id: int, *, visible_at: float, attempts: int, invoke_count: int
    ) -> None:
        """Release the event to be leased again at ``visible_at``; a no-op when the event
        has already left the queue."""
        await self._execute("retry_at", _RETRY, (visible_at, attempts, invoke_count, event_id))

    async def ack(self, event_id: int) -> None:
        """Remove the event; a no-op when it is already gone."""
        await self._execute("ack", "DELETE FROM streamfn_queue WHERE id = %s", (event_id,))

    async def pending(self) -> int:
        async def body(conn: _Conn) -> int:
            row = await (await conn.execute("SELECT count(*) FROM streamfn_queue")).fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run("pending", body)

    # --- idempotency -------------------------------------------------------------------
    async def claim(self, *, function: str, key: str, now: float, lease_until: float) -> Claim:
        async def body(conn: _Conn) -> Claim:
            while True:  # until the insert wins or there is a record to lock
                inserted = await conn.execute(_INSERT_CLAIM, (function, key, lease_until))
                if inserted.rowcount == 1:
                    return Claim(ClaimState.NEW)
                found = await (await conn.execute(_LOCK_RECORD, (function, key))).fetchone()
                if found is not None:
                    break  # else it was released between the two statements: insert again
            state, held_until, expires_at, result = found
            record = IdempotencyRecord(
                state=ClaimState(state), lease_until=held_until, expires_at=expires_at,
                result=None if result is None else bytes(result),
            )  # fmt: skip
            claim = decide_claim(record, now)
            if claim.state is ClaimState.NEW:
                await conn.execute(_RENEW_CLAIM, (lease_until, function, key))
            return claim

        return await self._run("claim", body)

    async def release(self, *, function: str, key: str) -> None:
        """Delete the key's IN_PROGRESS claim; a COMPLETED record is left alone."""
        query = (
            "DELETE FROM streamfn_idempotency"
            " WHERE function = %s AND key = %s AND state = 'in_progress'"
        )
        await self._execute("release", query, (function, key))

    async def finish(
        self, event_id: int | None, *, function: str, key: str, result: bytes, expires_at: float
    ) -> None:
        async def body(conn: _Conn) -> None:
            await conn.execute(_COMPLETE, (function, key, expires_at, result))
            if event_id is not None:
                await conn.execute("DELETE FROM streamfn_queue WHERE id = %s", (event_id,))

        await self._run("finish", body)

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


# --- opening ---------------------------------------------------------------------------


async def _create_schema(conn: _Conn) -> None:
    """Create the schema named first in ``search_path`` and the tables in it, if missing;
    refuse a schema newer than this streamfn."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamfn-schema'))")
    row = await (await conn.execute("SELECT current_setting('search_path')")).fetchone()
    first = (row[0] if row else "").split(",")[0].strip()
    if first and first != '"$user"':
        name = first[1:-1].replace('""', '"') if first.startswith('"') else first.lower()
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
    for statement in _SCHEMA:
        await conn.execute(statement)
    found = await (await conn.execute("SELECT max(version) FROM streamfn_schema")).fetchone()
    version = found[0] if found else None
    if version is None:
        await conn.execute("INSERT INTO streamfn_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    elif version > SCHEMA_VERSION:
        raise StateError(
            f"state store schema version {version} is newer than this streamfn"
            f" understands ({SCHEMA_VERSION}); upgrade streamfn"
        )


@contextlib.asynccontextmanager
async def open_postgres_store(
    url: str, *, max_connections: int = 8, connect_timeout: float = 10.0
) -> AsyncIterator[PostgresStore]:
    """Open the store in the database at ``url`` (a libpq URL or conninfo string), creating
    its tables if needed. Other streamfn processes may have it open at the same time.

    ``max_connections`` bounds the pool (calls beyond it wait); ``connect_timeout`` is how long
    opening, or a call waiting for a pooled connection, may take before raising
    RetriableStateError (as does an unreachable server or a refused login). Raises
    StateError for a malformed URL, or a schema newer than this streamfn understands. On
    exit the pool is closed.
    """
    where = describe(url)
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StateError(f"state store: invalid Postgres URL: {exc}") from exc
    pool: psycopg_pool.AsyncConnectionPool[_Conn] = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_connections,
        timeout=connect_timeout,
        kwargs={"autocommit": True},
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        open=False,
        name="streamfn-state",
    )
    store = PostgresStore(where, pool)
    try:
        try:
            # Connect once directly first: a bad login fails here with its own message
            # rather than as a pool timeout.
            first = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            )
            async with first as conn, conn.transaction():
                await _create_schema(conn)
            await pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            raise _translate(where, "open", exc) from exc
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()
