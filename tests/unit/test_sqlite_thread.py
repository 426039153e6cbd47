"""The SQLite store's thread when the database itself fails (disk I/O error, disk full):
callers get a StateError naming the cause, promptly, and the store can still be closed.

Hermetic: an in-memory database behind a connection wrapper that fails one statement.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.sqlite import SqliteStore, _migrate_and_reset, _write

pytestmark = pytest.mark.anyio


class FailingConnection:
    """An sqlite3 connection whose ``fail`` statement raises a disk I/O error. Until
    ``go`` is set, its first ``BEGIN IMMEDIATE`` waits (and sets ``entered``), so that the
    calls made meanwhile queue up and run together as one group commit."""

    def __init__(self, fail: str) -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _write(self._conn, _migrate_and_reset)
        self._fail = fail
        self.ends_transaction = False
        self.entered, self.go = threading.Event(), threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and not self.go.is_set():
            self.entered.set()
            self.go.wait(5)
        if sql == self._fail:
            if self.ends_transaction and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")  # as SQLite does on some I/O errors
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def memory_store(conn: FailingConnection) -> SqliteStore:
    return SqliteStore(Path("memory.db"), conn)  # type: ignore[arg-type]


def boom(conn: object) -> None:
    raise ValueError("this job fails")


@pytest.mark.parametrize("statement", ["RELEASE job", "SAVEPOINT job", "COMMIT"])
async def test_a_failing_group_commit_fails_its_callers_and_stops_the_store(
    statement: str,
) -> None:
    conn = FailingConnection(statement)
    store = memory_store(conn)
    errors: dict[str, BaseException] = {}

    async def write(key: str) -> None:
        try:
            await store.put_checkpoint("src", key, b"v")
        except BaseException as exc:
            errors[key] = exc

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "first")  # alone: its BEGIN waits for the others to queue
            await anyio.to_thread.run_sync(conn.entered.wait)
            tg.start_soon(write, "a")
            tg.start_soon(write, "b")
            await anyio.wait_all_tasks_blocked()
            conn.go.set()
        assert set(errors) >= {"a", "b"}
        for key in ("a", "b"):
            error = errors[key]
            assert type(error) is StateError, error
            assert "put_checkpoint failed" in str(error)
            assert f"{statement} failed: disk I/O error" in str(error)
        with pytest.raises(StateError, match=f"stopped: {statement} failed: disk I/O error"):
            await store.get_checkpoints("src")  # a later call fails at once, naming the cause
        await store.aclose()
        await store.aclose()


async def test_a_failing_rollback_of_one_job_stops_the_store() -> None:
    conn = FailingConnection("ROLLBACK TO job")
    store = memory_store(conn)
    outcomes: dict[str, BaseException | None] = {}

    async def call(name: str, body: Any) -> None:
        try:
            await store._write(name, body)
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO checkpoints VALUES ('s', 'k', x'00')")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first", write)
            await anyio.to_thread.run_sync(conn.entered.wait)
            tg.start_soon(call, "good", write)
            tg.start_soon(call, "bad", boom)
            await anyio.wait_all_tasks_blocked()
            conn.go.set()
        assert outcomes["first"] is None
        for name in ("good", "bad"):  # the transaction both were in is gone
            assert type(outcomes[name]) is StateError
            assert "ROLLBACK TO job failed: disk I/O error" in str(outcomes[name])
        await store.aclose()


async def test_a_failing_commit_of_a_lone_write_stops_the_store() -> None:
    conn = FailingConnection("COMMIT")
    conn.go.set()
    store = memory_store(conn)
    with anyio.fail_after(2):
        with pytest.raises(StateError, match=r"put_checkpoint failed.*COMMIT failed") as caught:
            await store.put_checkpoint("src", "k", b"v")
        assert not isinstance(caught.value, RetriableStateError)
        assert isinstance(caught.value.__cause__, Exception)
        with pytest.raises(StateError, match="stopped"):
            await store.pending()
        await store.aclose()


async def test_a_job_failing_on_its_own_leaves_the_store_running() -> None:
    conn = FailingConnection("never")
    conn.go.set()
    store = memory_store(conn)
    with pytest.raises(ValueError, match="this job fails"):
        await store._write("boom", boom)
    await store.put_checkpoint("src", "k", b"v")
    assert await store.get_checkpoints("src") == {"k": b"v"}
    await store.aclose()


FAILING_INSERT = "INSERT INTO checkpoints VALUES ('s', 'bad', x'00')"


def failing_insert(conn: sqlite3.Connection) -> None:
    conn.execute(FAILING_INSERT)


@pytest.mark.parametrize("grouped", [False, True])
async def test_a_statement_error_that_ends_the_transaction_fails_its_group_only(
    grouped: bool,
) -> None:
    conn = FailingConnection(FAILING_INSERT)
    conn.ends_transaction = True
    store = memory_store(conn)
    outcomes: dict[str, BaseException | None] = {}

    async def call(name: str, body: Any) -> None:
        try:
            await store._write(name, body)
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO checkpoints VALUES ('s', 'good', x'00')")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            if grouped:
                tg.start_soon(call, "first", lambda conn: None)
                await anyio.to_thread.run_sync(conn.entered.wait)
                tg.start_soon(call, "good", write)
            tg.start_soon(call, "bad", failing_insert)
            await anyio.wait_all_tasks_blocked()
            conn.go.set()
        failed = ["good", "bad"] if grouped else ["bad"]
        for name in failed:  # the transaction both were in is gone
            assert type(outcomes[name]) is StateError, outcomes
            assert f"{name} failed: disk I/O error" in str(outcomes[name])
        # ... and the store goes on: nothing was half written, the connection is sound
        await store.put_checkpoint("s", "after", b"1")
        assert await store.get_checkpoints("s") == {"after": b"1"}
        await store.aclose()
