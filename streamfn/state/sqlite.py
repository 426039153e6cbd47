"""The SQLite state store: one file, one owning process.

Theory of operation
-------------------

``open_sqlite_store(path)`` takes an exclusive, non-blocking ``flock`` on ``<path>.lock``
(writing its pid there), opens ``path`` in WAL mode, creates or migrates the schema
(``PRAGMA user_version``) and then, because no other process can own the store, resets
what a crashed owner left behind: every queue lease is dropped (those events are due again
at once) and every IN_PROGRESS idempotency claim is deleted (its owner is dead).

One ``sqlite3`` connection serves every call, owned by one dedicated thread that runs the
calls' transactions in order, so the event loop never waits on the disk. (The thread hands
results back with ``call_soon_threadsafe``: asyncio only, at about two thirds of the
per-call cost of ``anyio.to_thread``.) Every method is one transaction (``BEGIN IMMEDIATE``
for writes) and returns only after ``COMMIT``. A call cancelled through anyio waits for its
transaction to end; one cancelled by asyncio directly stops waiting, while its transaction
still commits or rolls back whole in the thread. Either way no write is left half done.

Durability: ``synchronous=NORMAL`` in WAL mode makes a committed transaction survive a
crash or SIGKILL of the process — the guarantee streamfn makes. It may lose the last
transactions on power loss or an OS crash (the WAL is not fsynced at each commit).

Errors: a busy or locked database raises RetriableStateError; any other sqlite3 error
raises StateError, both chained to the sqlite3 exception.

Queue rows are leased by setting ``leased_until``; a row whose lease has expired is due
again (``lease`` first returns such rows to the unleased set, inside its transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.base import Claim, ClaimState, QueuedEvent
from streamfn.state.claims import IdempotencyRecord, decide_claim

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
)
SCHEMA_VERSION = len(_MIGRATIONS)

_QUEUED_FIELDS = (
    "id", "function", "payload", "request_id", "idempotency_key", "idempotency_ttl",
    "enqueued_at", "attempts", "invoke_count",
)  # fmt: skip
_ENQUEUE = (
    "INSERT INTO queue (function, payload, request_id, idempotency_key, idempotency_ttl,"
    " enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (function, idempotency_key) DO NOTHING"
)
_UNLEASE_EXPIRED = "UPDATE queue SET leased_until = NULL WHERE leased_until <= ?"
_LEASE = (
    "UPDATE queue SET leased_until = ? WHERE id IN (SELECT id FROM queue"
    " WHERE leased_until IS NULL AND visible_at <= ? ORDER BY visible_at, id LIMIT ?)"
    f" RETURNING {', '.join(_QUEUED_FIELDS)}, visible_at"
)
_NEXT_DUE = (
    "SELECT (SELECT min(visible_at) FROM queue WHERE leased_until IS NULL),"
    " (SELECT min(leased_until) FROM queue WHERE leased_until IS NOT NULL)"
)
_RETRY = (
    "UPDATE queue SET visible_at = ?, leased_until = NULL, attempts = ?, invoke_count = ?"
    " WHERE id = ?"
)
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


_Job = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[sqlite3.Connection], Any], bool
]
GROUP_COMMIT = 256  # most jobs committed together by one transaction


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled by asyncio itself; nobody waits
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteStore:
    """A :class:`~streamfn.state.base.StateStore` in one SQLite file. Build it with
    :func:`open_sqlite_store`; see the module docstring for how it works."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self._conn = conn
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve, name=f"streamfn-sqlite:{path.name}", daemon=True
        )
        self._thread.start()

    @property
    def path(self) -> Path:
        return self._path

    def _serve(self) -> None:
        """The store thread: run jobs in order and hand back their outcomes.

        Jobs that queued up while the previous transaction ran are committed together
        (group commit): one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each job inside its own
        savepoint so a failing job rolls back alone. No job's outcome is handed back
        before the commit that makes it durable.
        """
        running = True
        while running:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < GROUP_COMMIT:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    running = False
                    break
                batch.append(queued)
            outcomes = self._run_batch(batch) if len(batch) > 1 else [self._run_one(job)]
            for (loop, future, _, _), outcome in zip(batch, outcomes, strict=True):
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, future, *outcome)

    def _run_one(self, job: _Job) -> tuple[object, BaseException | None]:
        _, _, body, write = job
        try:
            return (_write(self._conn, body) if write else body(self._conn)), None
        except BaseException as exc:  # handed to the awaiting task, which raises it
            return None, exc

    def _run_batch(self, batch: list[_Job]) -> list[tuple[object, BaseException | None]]:
        conn = self._conn
        outcomes: list[tuple[object, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(None, exc)] * len(batch)
        for _, _, body, _ in batch:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((body(conn), None))
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                outcomes.append((None, exc))
            conn.execute("RELEASE job")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(None, exc)] * len(batch)
        return outcomes

    async def _run(
        self, op: str, body: Callable[[sqlite3.Connection], _T], *, write: bool = False
    ) -> _T:
        if self._closed:
            raise StateError(f"state store {self._path}: {op} after close")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._jobs.put((loop, future, body, write))
        try:
            with anyio.CancelScope(shield=True):  # a queued transaction is waited for
                result = await future
        except sqlite3.Error as exc:
            raise _translate(self._path, op, exc) from exc
        return result

    async def _write(self, op: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(op, body, write=True)

    async def _execute(self, op: str, sql: str, params: tuple[object, ...]) -> int:
        """One statement in its own write transaction; returns the rows it changed."""
        return await self._write(op, lambda conn: conn.execute(sql, params).rowcount)

    async def aclose(self) -> None:
        """Close the connection and stop the store thread. Idempotent; later calls raise
        StateError."""
        if self._closed:
            return
        try:
            await self._run("close", lambda conn: conn.close())
        finally:
            self._closed = True
            self._jobs.put(None)
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

    async def lease(self, *, now: float, limit: int, lease_for: float) -> list[QueuedEvent]:
        if limit <= 0:
            return []

        def body(conn: sqlite3.Connection) -> list[Any]:
            conn.execute(_UNLEASE_EXPIRED, (now,))
            return conn.execute(_LEASE, (now + lease_for, now, limit)).fetchall()

        rows = await self._write("lease", body)
        rows.sort(key=lambda row: (row[-1], row[0]))  # RETURNING order is unspecified
        return [QueuedEvent(**dict(zip(_QUEUED_FIELDS, row, strict=False))) for row in rows]

    async def next_due(self) -> float | None:
        """The earliest ``visible_at`` of an unleased event or ``leased_until`` of a leased
        one: when ``lease`` next has something to return (None: queue empty)."""

        def body(conn: sqlite3.Connection) -> float | None:
            due = [t for t in conn.execute(_NEXT_DUE).fetchone() if t is not None]
            return min(due) if due else None

        return await self._run("next_due", body)

    async def retry_at(
        self, event_id: int, *, visible_at: float, attempts: int, invoke_count: int
    ) -> None:
        """Release the event to be leased again at ``visible_at``; a no-op when the event
        has already left the queue."""
        await self._execute("retry_at", _RETRY, (visible_at, attempts, invoke_count, event_id))

    async def ack(self, event_id: int) -> None:
        """Remove the event; a no-op when it is already gone."""
        await self._execute("ack", "DELETE FROM queue WHERE id = ?", (event_id,))

    async def pending(self) -> int:
        sql = "SELECT count(*) FROM queue"
        return await self._run("pending", lambda conn: int(conn.execute(sql).fetchone()[0]))

    # --- idempotency -------------------------------------------------------------------
    async def claim(self, *, function: str, key: str, now: float, lease_until: float) -> Claim:
        def body(conn: sqlite3.Connection) -> Claim:
            found = conn.execute(_GET_RECORD, (function, key)).fetchone()
            record = None
            if found is not None:
                state, held_until, expires_at, result = found
                record = IdempotencyRecord(
                    state=ClaimState(state),
                    lease_until=held_until,
                    expires_at=expires_at,
                    result=result,
                )
            claim = decide_claim(record, now)
            if claim.state is ClaimState.NEW:
                conn.execute(
                    _UPSERT_RECORD, (function, key, "in_progress", lease_until, None, None)
                )
            return claim

        return await self._write("claim", body)

    async def release(self, *, function: str, key: str) -> None:
        """Delete the key's IN_PROGRESS claim; a COMPLETED record is left alone."""
        sql = "DELETE FROM idempotency WHERE function = ? AND key = ? AND state = 'in_progress'"
        await self._execute("release", sql, (function, key))

    async def finish(
        self, event_id: int | None, *, function: str, key: str, result: bytes, expires_at: float
    ) -> None:
        record = (function, key, "completed", None, expires_at, result)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_RECORD, record)
            if event_id is not None:
                conn.execute("DELETE FROM queue WHERE id = ?", (event_id,))

        await self._write("finish", body)

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
async def open_sqlite_store(path: Path, *, busy_timeout: float = 5.0) -> AsyncIterator[SqliteStore]:
    """Open (creating if needed) the store at ``path`` as its only owner.

    ``busy_timeout`` is how long a call waits for a lock held by another connection to the
    file (a backup or an inspecting ``sqlite3`` shell) before raising RetriableStateError.

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
        store = SqliteStore(path, conn)
        try:
            yield store
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()
    finally:
        _unlock(fd)
