"""The SQLite store's thread: one owned ``sqlite3`` connection, every call's transaction.

Theory of operation
-------------------

:class:`SqliteThread` owns the store's one connection and a dedicated thread that runs the
calls' transactions in order, so the event loop never waits on the disk. A call is a job
(:meth:`SqliteThread.submit`); its outcome comes back on the caller's event loop through
``call_soon_threadsafe`` (asyncio only, at about two thirds of the per-call cost of
``anyio.to_thread``). Jobs that queued up while the previous transaction ran are committed
together (group commit, at most :data:`GROUP_COMMIT`): one ``BEGIN IMMEDIATE`` ...
``COMMIT``, each job in its own savepoint so a failing job rolls back alone. No outcome is
handed back before the commit that makes it durable.

A job's own error fails that job alone. When a statement that frames transactions fails
(``SAVEPOINT``, ``ROLLBACK``, ``RELEASE``, ``COMMIT``: disk I/O error, disk full) or the
thread itself fails, the thread stops: the jobs running and every job queued until
:meth:`SqliteThread.close` fail with a StateError naming the cause (:meth:`refusal`), and
the connection is closed. Used only by :class:`streamfn.state.sqlite.SqliteStore`, which
translates sqlite3 errors and waits out a busy database.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamfn.errors import StateError

__all__ = ["GROUP_COMMIT", "SqliteThread"]

_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    str,  # the operation, for messages
    Callable[[sqlite3.Connection], Any],
    bool,  # a write: run in a transaction
]
_Outcome = tuple[object, BaseException | None]
GROUP_COMMIT = 256  # most jobs committed together by one transaction


class _Broken(Exception):
    """A statement framing a transaction (SAVEPOINT, ROLLBACK, RELEASE, COMMIT) failed: the
    connection is in an unknown state and the store stops."""

    def __init__(self, statement: str, cause: sqlite3.Error) -> None:
        super().__init__(f"{statement} failed: {cause}")


def _frame(conn: sqlite3.Connection, statement: str) -> None:
    try:
        conn.execute(statement)
    except sqlite3.Error as exc:
        raise _Broken(statement, exc) from exc


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled by asyncio itself; nobody waits
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteThread:
    """The thread owning ``conn`` (the store file ``path``, for messages); started at once.
    Thread-safe to submit to from any event loop thread; :meth:`close` once, then join."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self._conn = conn
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopped: BaseException | None = None  # why the thread stopped, set by it
        self._thread = threading.Thread(
            target=self._serve, name=f"streamfn-sqlite:{path.name}", daemon=True
        )
        self._thread.start()

    @property
    def stopped(self) -> BaseException | None:
        """Why the thread stopped on an error (None while it runs or after a clean close)."""
        return self._stopped

    def submit(
        self, op: str, body: Callable[[sqlite3.Connection], Any], write: bool
    ) -> asyncio.Future[Any]:
        """Queue ``body`` (in a transaction when ``write``) and return the future, on the
        running loop, that gets its result or error. Call from the event loop thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, op, body, write))
        return future

    def close(self) -> None:
        """Let queued jobs run, then close the connection and end the thread (see
        :meth:`join`). Jobs submitted afterwards fail with a StateError."""
        self._jobs.put(None)

    def join(self) -> None:
        """Wait for the thread to end (blocking: run it in a worker thread)."""
        self._thread.join()

    def _serve(self) -> None:
        """The store thread: run jobs in order and hand back their outcomes.

        Jobs that queued up while the previous transaction ran are committed together
        (group commit): one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each job inside its own
        savepoint so a failing job rolls back alone. No job's outcome is handed back
        before the commit that makes it durable.

        Nothing escapes this thread unreported: when a statement framing a transaction
        fails, or anything else goes wrong here, the store stops (:meth:`_stop`).
        """
        running: list[_Job] = []
        try:
            while (job := self._jobs.get()) is not None:
                running = [job]
                last = False
                while len(running) < GROUP_COMMIT:
                    try:
                        queued = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if queued is None:
                        last = True
                        break
                    running.append(queued)
                outcomes = self._run_batch(running) if len(running) > 1 else [self._run_one(job)]
                self._hand_back(running, outcomes)
                running = []
                if last:
                    break
        except BaseException as exc:  # the connection is unusable, or a bug: stop loudly
            self._stop(running, exc)
            return
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._refuse_rest("after close")

    def _stop(self, running: list[_Job], exc: BaseException) -> None:
        """Stop the store after ``exc``: fail the jobs ``running`` (none committed: closing
        the connection rolls their transaction back) and every job queued until
        :meth:`close`, each with a StateError naming the cause."""
        self._stopped = exc
        with contextlib.suppress(BaseException):
            self._conn.close()
        self._hand_back(running, [(None, self.refusal(job[2])) for job in running])
        while (job := self._jobs.get()) is not None:
            self._hand_back([job], [(None, self.refusal(job[2]))])
        self._refuse_rest("after close")

    def refusal(self, op: str) -> StateError:
        """The error of a call made or waiting when the store stopped, naming the cause."""
        cause = self._stopped
        reason = str(cause) if isinstance(cause, _Broken) else f"{type(cause).__name__}: {cause}"
        error = StateError(f"state store {self._path}: {op} failed: the store stopped: {reason}")
        error.__cause__ = cause
        return error

    def _refuse_rest(self, why: str) -> None:
        """Fail jobs that raced past :meth:`close` into the queue; nobody serves them."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                refused = StateError(f"state store {self._path}: {job[2]} {why}")
                self._hand_back([job], [(None, refused)])

    @staticmethod
    def _hand_back(jobs: list[_Job], outcomes: list[_Outcome]) -> None:
        for (loop, future, _, _, _), outcome in zip(jobs, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def _run_one(self, job: _Job) -> _Outcome:
        """One job on its own. A failing BEGIN (busy) or body fails the job alone; a failing
        ROLLBACK or COMMIT raises _Broken."""
        conn, body, write = self._conn, job[3], job[4]
        if not write:
            try:
                return body(conn), None
            except Exception as exc:  # handed to the awaiting task, which raises it
                return None, exc
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return None, exc
        try:
            result = body(conn)
        except Exception as exc:
            if conn.in_transaction:  # (an I/O error or a full disk may have ended it)
                _frame(conn, "ROLLBACK")
            return None, exc
        _frame(conn, "COMMIT")
        return result, None

    def _run_batch(self, batch: list[_Job]) -> list[_Outcome]:
        """Jobs in one transaction, each in a savepoint. A failing BEGIN fails them all, and
        so does a job whose failure ended the whole transaction (SQLite rolls it back on an
        I/O error or a full disk); a failing savepoint statement or COMMIT raises _Broken."""
        conn = self._conn
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(None, exc)] * len(batch)
        for job in batch:
            _frame(conn, "SAVEPOINT job")
            try:
                outcomes.append((job[3](conn), None))
            except Exception as exc:
                if not conn.in_transaction:  # every job's work is undone, none is committed
                    return [(None, exc)] * len(batch)
                _frame(conn, "ROLLBACK TO job")
                outcomes.append((None, exc))
            _frame(conn, "RELEASE job")
        _frame(conn, "COMMIT")
        return outcomes
