"""The SQLite state store: one file, one owning process.

Theory of operation
-------------------

``open_sqlite_store(path)`` takes an exclusive, non-blocking ``flock`` on ``<path>.lock``
(writing its pid there), opens ``path`` in WAL mode, creates or migrates the schema
(``PRAGMA user_version``) and then, because no other process can own the store, resets
what a crashed owner left behind: every queue lease is dropped (those events are due again
at once) and every IN_PROGRESS idempotency record is deleted (written by an older
streamfn, whose owner is dead).

One ``sqlite3`` connection serves every call, owned by one dedicated thread that runs the
calls' transactions in order, group-committed (:mod:`streamfn.state.sqlite_thread`), so
the event loop never waits on the disk. Every method is one transaction (``BEGIN
IMMEDIATE`` for writes) and returns only after ``COMMIT``. A call cancelled through anyio
waits for its transaction to end; one cancelled by asyncio directly stops waiting, while
its transaction still commits or rolls back whole in the thread. Either way no write is
left half done. This module holds the schema, its migrations and the store's methods.

Durability: ``synchronous=NORMAL`` in WAL mode makes a committed transaction survive a
crash or SIGKILL of the process — the guarantee streamfn makes. It may lose the last
transactions on power loss or an OS crash (the WAL is not fsynced at each commit).

Errors: a busy or locked database (another connection holds the write lock) is waited
out: the call is retried with backoff until the lock is free (:mod:`streamfn.state.outage`,
logged once). Any other sqlite3 error raises StateError chained to it. A job's own error
fails that call alone; when a statement that frames transactions fails (disk I/O error,
disk full) or the thread itself fails, the store stops: every caller waiting or still to
come gets a StateError naming the cause, at once, and :meth:`SqliteStore.aclose` still
returns.

Queue rows are leased by setting ``leased_until``; a row whose lease has expired is due
again (``lease`` first returns such rows to the unleased set, inside its transaction).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

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
    Requeue,
    Settlement,
)
from streamfn.state.claims import decide_claim
from streamfn.state.outage import OutageRetry
from streamfn.state.sqlite_thread import SqliteThread

__all__ = ["SqliteStore", "open_sqlite_store"]

_T = TypeVar("_T")

# _MIGRATIONS[n] takes the schema from user_version n to n + 1, in the open transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT, function TEXT NOT NULL, payload BLOB NOT NULL,
            request_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, idempotency_ttl REAL NOT NULL,
            enqueued_at REAL NOT NULL, visible_at REAL NOT NULL, leased_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0, invoke_count INTEGER NOT NULL DEFAULT 0,
            UNIQUE (function, idempotency_key))""",
        "CREATE INDEX queue_due ON queue (visible_at, id) WHERE leased_until IS NULL",
        "CREATE INDEX queue_leased ON queue (leased_until) WHERE leased_until IS NOT NULL",
        """CREATE TABLE idempotency (
            function TEXT NOT NULL, key TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
            lease_until REAL, expires_at REAL, result BLOB, PRIMARY KEY (function, key))""",
        "CREATE INDEX idempotency_expiry ON idempotency (expires_at) WHERE expires_at NOT NULL",
        "CREATE INDEX idempotency_lease ON idempotency (lease_until) WHERE lease_until NOT NULL",
        """CREATE TABLE checkpoints (
            source TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (source, key))""",
    ),
    (  # 1 -> 2: lease tokens (fencing), throttle counts, the destination outbox
        "ALTER TABLE queue ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE queue ADD COLUMN throttles INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL,
            record BLOB NOT NULL, created_at REAL NOT NULL, visible_at REAL NOT NULL,
            leased_until REAL, lease_token INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_due ON outbox (visible_at, id)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_ENQUEUE = (
    "INSERT INTO queue (function, payload, request_id, idempotency_key, idempotency_ttl,"
    " enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (function, idempotency_key) DO NOTHING"
)
_UNLEASE_EXPIRED = "UPDATE queue SET leased_until = NULL WHERE leased_until <= ?"
_LEASE = (
    "UPDATE queue SET leased_until = ?, lease_token = lease_token + 1 WHERE id IN"
    # In due order along queue_due, skipping other functions' events: the planner would
    # otherwise pick the (function, key) index and sort every due event of the functions.
    " (SELECT id FROM queue INDEXED BY queue_due"
    " WHERE leased_until IS NULL AND visible_at <= ?{only}"
    " ORDER BY visible_at, id LIMIT ?)"
    f" RETURNING {', '.join(QUEUED_FIELDS)}, visible_at"
)
_NEXT_DUE = (  # each an ordered index walk that stops at the first event of the functions
    "SELECT (SELECT visible_at FROM queue INDEXED BY queue_due"
    " WHERE leased_until IS NULL{only} ORDER BY visible_at LIMIT 1),"
    " (SELECT leased_until FROM queue INDEXED BY queue_leased"
    " WHERE leased_until IS NOT NULL{only} ORDER BY leased_until LIMIT 1)"
)
_FENCE_REQUEUE = (
    "UPDATE queue SET visible_at = ?, leased_until = NULL, attempts = ?, invoke_count = ?,"
    " throttles = ? WHERE id = ? AND lease_token = ?"
)
_FENCE_DELETE = "DELETE FROM queue WHERE id = ? AND lease_token = ?"
_BEGIN_ATTEMPT = (
    "UPDATE queue SET attempts = ?, invoke_count = ?, leased_until = ?"
    " WHERE id = ? AND lease_token = ?"
)
_ORPHANS = (
    "DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE enqueued_at < ?"
    " AND (leased_until IS NULL OR leased_until <= ?) AND function NOT IN ({keep}) LIMIT ?)"
    " RETURNING function, request_id, enqueued_at"
)
_OUTBOX_INSERT = (
    "INSERT INTO outbox (destination, record, created_at, visible_at) VALUES (?, ?, ?, ?)"
)
_OUTBOX_LEASE = (
    "UPDATE outbox SET leased_until = ?, lease_token = lease_token + 1 WHERE id IN"
    " (SELECT id FROM outbox WHERE visible_at <= ? AND (leased_until IS NULL"
    " OR leased_until <= ?) ORDER BY visible_at, id LIMIT ?)"
    f" RETURNING {', '.join(OUTBOX_FIELDS)}, visible_at"
)
_OUTBOX_NEXT_DUE = "SELECT min(max(visible_at, coalesce(leased_until, visible_at))) FROM outbox"
_OUTBOX_DONE = "DELETE FROM outbox WHERE id = ? AND lease_token = ?"
_OUTBOX_RETRY = (
    "UPDATE outbox SET visible_at = ?, leased_until = NULL, attempts = ?"
    " WHERE id = ? AND lease_token = ?"
)


def _only(functions: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """The ``AND function IN (...)`` clause and its parameters for a lease filter."""
    if functions is None:
        return "", ()
    names = tuple(functions)
    return f" AND function IN ({', '.join('?' * len(names))})", names


_GET_RECORD = (
    "SELECT state, lease_until, expires_at, result FROM idempotency WHERE function = ? AND key = ?"
)
_UPSERT_RECORD = (
    "INSERT INTO idempotency (function, key, state, lease_until, expires_at, result)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (function, key) DO UPDATE SET"
    " state = excluded.state, lease_until = excluded.lease_until,"
    " expires_at = excluded.expires_at, result = excluded.result"
)
_PUT_CHECKPOINT = (
    "INSERT INTO checkpoints (source, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (source, key) DO UPDATE SET value = excluded.value"
)


def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``body`` in one write transaction, committed before returning."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _translate(path: Path, op: str, exc: sqlite3.Error) -> StateError:
    code = getattr(exc, "sqlite_errorcode", None)
    busy = code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    busy = busy or "database is locked" in str(exc) or "database is busy" in str(exc)
    kind = RetriableStateError if busy else StateError
    return kind(f"state store {path}: {op} failed: {exc}")


class SqliteStore:
    """A :class:`~streamfn.state.base.StateStore` in one SQLite file. Build it with
    :func:`open_sqlite_store`; see the module docstring for how it works."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, clock: Clock | None = None) -> None:
        self._path = path
        self._closed = False
        self._outage = OutageRetry(str(path), clock=clock or SystemClock())
        self._thread = SqliteThread(path, conn)

    @property
    def path(self) -> Path:
        return self._path

    async def _run(
        self, op: str, body: Callable[[sqlite3.Connection], _T], *, write: bool = False
    ) -> _T:
        """Run ``body`` on the store thread (in a transaction when ``write``); every call
        goes through here. A busy database is waited out (:class:`OutageRetry`); any other
        failure raises StateError, and once the store has stopped every call does."""
        return await self._outage.run(op, lambda: self._attempt(op, body, write))

    async def _attempt(self, op: str, body: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        if self._thread.stopped is not None:
            raise self._thread.refusal(op)
        if self._closed:
            raise StateError(f"state store {self._path}: {op} after close")
        future = self._thread.submit(op, body, write)
        try:
            with anyio.CancelScope(shield=True):  # a queued transaction is waited for
                result: _T = await future
        except sqlite3.Error as exc:
            raise _translate(self._path, op, exc) from exc
        return result

    async def _write(self, op: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(op, body, write=True)

    async def _execute(self, op: str, sql: str, params: tuple[object, ...]) -> int:
        """One statement in its own write transaction; returns the rows it changed."""
        return await self._write(op, lambda conn: conn.execute(sql, params).rowcount)

    async def aclose(self) -> None:
        """Let queued calls finish, close the connection and stop the store thread.
        Idempotent, and returns also after the store has stopped on an error; later calls
        raise StateError."""
        if self._closed:
            return
        self._closed = True
        self._thread.close()
        await anyio.to_thread.run_sync(self._thread.join)

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
        if checkpoint is None:
            return await self._execute("enqueue", _ENQUEUE, row) == 1

        def body(conn: sqlite3.Connection) -> bool:
            queued = conn.execute(_ENQUEUE, row).rowcount == 1
            conn.execute(_PUT_CHECKPOINT, checkpoint)
            return queued

        return await self._write("enqueue", body)

    async def enqueue_many(self, events: Sequence[NewEvent], *, now: float) -> list[bool]:
        def body(conn: sqlite3.Connection) -> list[bool]:
            queued = []
            for e in events:
                row = (e.function, e.payload, e.request_id, e.idempotency_key)
                queued.append(
                    conn.execute(_ENQUEUE, (*row, e.idempotency_ttl, now, now)).rowcount == 1
                )
                if e.checkpoint is not None:
                    conn.execute(_PUT_CHECKPOINT, e.checkpoint)
            return queued

        return await self._write("enqueue", body) if events else []

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
        only, names = _only(functions)
        query = _LEASE.format(only=only)

        def body(conn: sqlite3.Connection) -> list[Any]:
            conn.execute(_UNLEASE_EXPIRED, (now,))
            return conn.execute(query, (now + lease_for, now, *names, limit)).fetchall()

        return queued_events(await self._write("lease", body))

    async def next_due(self, *, functions: Collection[str] | None = None) -> float | None:
        only, names = _only(functions)
        query = _NEXT_DUE.format(only=only)

        def body(conn: sqlite3.Connection) -> float | None:
            due = [t for t in conn.execute(query, names + names).fetchone() if t is not None]
            return min(due) if due else None

        return await self._run("next_due", body)

    async def begin_many(
        self, attempts: Sequence[tuple[QueuedEvent, float]], *, now: float
    ) -> list[Claim | None]:
        def body(conn: sqlite3.Connection) -> list[Claim | None]:
            return [_begin_in(conn, event, now, until) for event, until in attempts]

        return await self._write("begin", body) if attempts else []

    async def settle(self, event: QueuedEvent, settlement: Settlement) -> bool:
        [written] = await self.settle_many([(event, settlement)])
        return written

    async def settle_many(self, decisions: Sequence[tuple[QueuedEvent, Settlement]]) -> list[bool]:
        def body(conn: sqlite3.Connection) -> list[bool]:
            return [
                _settle_in(conn, e.id, e.token, e.function, e.idempotency_key, settlement)
                for e, settlement in decisions
            ]

        return await self._write("settle", body) if decisions else []

    async def pending(self) -> int:
        sql = "SELECT count(*) FROM queue"
        return await self._run("pending", lambda conn: int(conn.execute(sql).fetchone()[0]))

    async def drop_orphans(
        self, *, keep: Collection[str], enqueued_before: float, now: float, limit: int = 1000
    ) -> list[DroppedEvent]:
        names = tuple(keep)
        query = _ORPHANS.format(keep=", ".join("?" * len(names)))

        def body(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(query, (enqueued_before, now, *names, limit)).fetchall()

        rows = await self._write("drop_orphans", body)
        return [DroppedEvent(function=f, request_id=r, enqueued_at=t) for f, r, t in rows]

    # --- outbox --------------------------------------------------------------------------
    async def lease_outbox(self, *, now: float, limit: int, lease_for: float) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        params = (now + lease_for, now, now, limit)
        rows = await self._write(
            "lease_outbox", lambda conn: conn.execute(_OUTBOX_LEASE, params).fetchall()
        )
        return outbox_entries(rows)

    async def outbox_next_due(self) -> float | None:
        def body(conn: sqlite3.Connection) -> float | None:
            due = conn.execute(_OUTBOX_NEXT_DUE).fetchone()[0]
            return None if due is None else float(due)

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

        def body(conn: sqlite3.Connection) -> int:
            done = conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            stale = conn.execute(
                "DELETE FROM idempotency WHERE lease_until <= ? AND state = 'in_progress'", (now,)
            )
            return done.rowcount + stale.rowcount

        return await self._write("expire", body)

    # --- checkpoints ---------------------------------------------------------------------
    async def get_checkpoints(self, source: str) -> Mapping[str, bytes]:
        sql = "SELECT key, value FROM checkpoints WHERE source = ?"
        return await self._run("get_checkpoints", lambda conn: dict(conn.execute(sql, (source,))))

    async def put_checkpoint(self, source: str, key: str, value: bytes) -> None:
        await self._execute("put_checkpoint", _PUT_CHECKPOINT, (source, key, value))

    async def setdefault_checkpoint(self, source: str, key: str, value: bytes) -> bytes:
        def body(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT INTO checkpoints (source, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (source, key) DO NOTHING",
                (source, key, value),
            )
            row = conn.execute(
                "SELECT value FROM checkpoints WHERE source = ? AND key = ?", (source, key)
            ).fetchone()
            return bytes(row[0])

        return await self._write("setdefault_checkpoint", body)

    async def delete_checkpoint(self, source: str, key: str) -> None:
        sql = "DELETE FROM checkpoints WHERE source = ? AND key = ?"
        await self._execute("delete_checkpoint", sql, (source, key))


def _begin_in(
    conn: sqlite3.Connection, event: QueuedEvent, now: float, lease_until: float
) -> Claim | None:
    """The key's claim state (no record is written: the lease is the claim); on NEW count
    the attempt and extend the lease, fenced: None when the token is stale. A COMPLETED
    or IN_PROGRESS answer writes nothing, so it needs no fence: the settle that follows
    is fenced."""
    key = (event.function, event.idempotency_key)
    claim = decide_claim(idempotency_record(conn.execute(_GET_RECORD, key).fetchone()), now)
    # Absolute counts, not "+ 1": a retry of a begin that did commit counts it once.
    counted = (event.attempts + 1, event.invoke_count + 1, lease_until, event.id, event.token)
    if claim.state is ClaimState.NEW and conn.execute(_BEGIN_ATTEMPT, counted).rowcount != 1:
        return None
    return claim


def _settle_in(
    conn: sqlite3.Connection,
    event_id: int,
    token: int,
    function: str,
    key: str,
    s: Settlement,
) -> bool:
    """Write ``s`` for the leased event; False (nothing written) for a stale token."""
    requeue: Requeue | None = s.requeue
    if requeue is None:
        fenced = conn.execute(_FENCE_DELETE, (event_id, token)).rowcount
    else:
        params = (requeue.visible_at, requeue.attempts, requeue.invoke_count, requeue.throttles)
        fenced = conn.execute(_FENCE_REQUEUE, (*params, event_id, token)).rowcount
    if fenced != 1:
        return False
    if s.complete is not None:
        record = (function, key, "completed", None, s.complete.expires_at, s.complete.result)
        conn.execute(_UPSERT_RECORD, record)
    if s.records:
        conn.executemany(_OUTBOX_INSERT, outbox_rows(s))
    if s.enqueue:
        conn.executemany(_ENQUEUE, enqueue_rows(s))
    return True


# --- opening ---------------------------------------------------------------------------


def _lock(path: Path) -> int:
    """Take the owner lock ``<path>.lock`` and write our pid into it; returns its fd."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"state store {path}: cannot open lock file: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if holder == str(os.getpid()):
            raise StateError(f"state store {path} is already open in this process") from exc
        raise StateError(
            f"state store {path} is in use by another streamfn process (pid {holder})"
        ) from exc
    except OSError as exc:
        os.close(fd)
        raise StateError(f"state store {path}: cannot lock {lock_path}: {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor drops the flock


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"state store {path}: WAL mode unavailable (journal_mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _write(conn, _migrate_and_reset)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate_and_reset(conn: sqlite3.Connection) -> None:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state store schema version {version} is newer than this streamfn"
            f" understands ({SCHEMA_VERSION}); upgrade streamfn"
        )
    for migration in _MIGRATIONS[version:]:
        for statement in migration:
            conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    # The flock makes us the only owner: whatever a previous owner held, it held when it died.
    conn.execute("UPDATE queue SET leased_until = NULL WHERE leased_until IS NOT NULL")
    conn.execute("DELETE FROM idempotency WHERE state = 'in_progress'")


@contextlib.asynccontextmanager
async def open_sqlite_store(
    path: Path, *, busy_timeout: float = 5.0, clock: Clock | None = None
) -> AsyncIterator[SqliteStore]:
    """Open (creating if needed) the store at ``path`` as its only owner.

    ``busy_timeout`` is how long each attempt of a call waits for a lock held by another
    connection to the file (a backup or an inspecting ``sqlite3`` shell); a call tries
    again, with backoff waited on ``clock`` (default: the system clock), until the lock is
    released (see :mod:`streamfn.state.outage`).

    Raises StateError when another process holds the store, when the file cannot be opened,
    or when its schema is newer than this version of streamfn understands. The parent
    directory must exist. On exit the connection is closed and the lock released.
    """
    path = Path(path)
    fd = await anyio.to_thread.run_sync(_lock, path)
    try:
        try:
            conn = await anyio.to_thread.run_sync(_connect, path, busy_timeout)
        except sqlite3.Error as exc:
            raise _translate(path, "open", exc) from exc
        store = SqliteStore(path, conn, clock=clock)
        try:
            yield store
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()
    finally:
        _unlock(fd)
