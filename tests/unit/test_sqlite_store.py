"""The SQLite state store, on real files: what test_state_store_contract.py does not cover
for every backend — crash recovery, single ownership, group commit.

Times are passed in, never read: each test picks its own ``now``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.base import Claim, ClaimState, StateStore
from streamfn.state.sqlite import SqliteStore, open_sqlite_store

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
NEW = Claim(ClaimState.NEW)
IN_PROGRESS = Claim(ClaimState.IN_PROGRESS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(db) as opened:
        yield opened


async def put(store: StateStore, key: str, now: float = 0.0, function: str = "f") -> bool:
    return await store.enqueue(
        function=function, payload=f"payload-{key}".encode(), request_id=f"req-{key}",
        idempotency_key=key, idempotency_ttl=60, now=now,
    )  # fmt: skip


async def keys(store: StateStore, now: float, limit: int = 100, lease_for: float = 30) -> list[str]:
    return [e.idempotency_key for e in await store.lease(now=now, limit=limit, lease_for=lease_for)]


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *args]


CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# --- idempotency -----------------------------------------------------------------------------


async def test_finish_is_one_transaction(store: SqliteStore, db: Path) -> None:
    await put(store, "k")
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    await store.claim(function="f", key="k", now=0.0, lease_until=30.0)
    with sqlite3.connect(db) as other:  # make the ack half of finish fail
        other.execute(
            "CREATE TRIGGER no_ack BEFORE DELETE ON queue BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    with pytest.raises(StateError, match="finish failed") as caught:
        await store.finish(event.id, function="f", key="k", result=b"ok", expires_at=60.0)
    assert not isinstance(caught.value, RetriableStateError)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert await store.pending() == 1
    assert await store.claim(function="f", key="k", now=1.0, lease_until=30.0) == IN_PROGRESS


# --- lifecycle: reopen, ownership, crashes ---------------------------------------------------


async def test_reopen_keeps_state_and_resets_what_the_last_owner_held(db: Path) -> None:
    async with open_sqlite_store(db) as store:
        for key in ("leased", "waiting", "done"):
            await put(store, key, now=1.0)
        await put(store, "retry", now=2.0)
        leased = await store.lease(now=5.0, limit=4, lease_for=1000)
        await store.retry_at(leased[-1].id, visible_at=500.0, attempts=1, invoke_count=1)
        await store.claim(function="f", key="leased", now=5.0, lease_until=1000.0)
        await store.claim(function="f", key="done", now=5.0, lease_until=1000.0)
        await store.finish(leased[2].id, function="f", key="done", result=b"r", expires_at=900.0)
        await store.put_checkpoint("src", "pos", b"7")
    async with open_sqlite_store(db) as store:
        assert await store.pending() == 3
        assert await store.next_due() == 1.0
        assert await keys(store, now=6.0, lease_for=1e4) == ["leased", "waiting"]  # due at once
        assert await keys(store, now=500.0) == ["retry"]
        assert await store.claim(function="f", key="leased", now=6.0, lease_until=60.0) == NEW
        done = await store.claim(function="f", key="done", now=6.0, lease_until=60.0)
        assert done == Claim(ClaimState.COMPLETED, b"r")
        assert await store.get_checkpoints("src") == {"pos": b"7"}


async def test_calls_after_close_fail(db: Path) -> None:
    async with open_sqlite_store(db) as store:
        pass
    await store.aclose()  # idempotent
    with pytest.raises(StateError, match="pending after close"):
        await store.pending()


LOCK_PROBE = """
    import sys, anyio
    from pathlib import Path
    from streamfn.errors import StateError
    from streamfn.state.sqlite import open_sqlite_store

    async def main() -> None:
        try:
            async with open_sqlite_store(Path(sys.argv[1])):
                print("opened")
        except StateError as exc:
            print(exc)
            sys.exit(3)

    anyio.run(main)
"""


async def test_a_second_process_cannot_open_an_owned_store(db: Path) -> None:
    async with open_sqlite_store(db):
        probe = await anyio.run_process(python(LOCK_PROBE, str(db)), check=False, env=CHILD_ENV)
        message = f"state store {db} is in use by another streamfn process (pid {os.getpid()})"
        assert (probe.returncode, probe.stdout.decode().strip()) == (3, message)
        with pytest.raises(StateError, match="already open in this process"):
            async with open_sqlite_store(db):  # nor a second owner in this process
                pass
    probe = await anyio.run_process(python(LOCK_PROBE, str(db)), check=False, env=CHILD_ENV)
    assert (probe.returncode, probe.stdout.decode().strip()) == (0, "opened")


CRASHING_OWNER = """
    import sys, time, anyio
    from pathlib import Path
    from streamfn.state.sqlite import open_sqlite_store

    async def main() -> None:
        async with open_sqlite_store(Path(sys.argv[1])) as store:
            for i in range(int(sys.argv[2])):
                await store.enqueue(function="f", payload=b"p%d" % i, request_id=f"r{i}",
                                    idempotency_key=f"k{i}", idempotency_ttl=60, now=float(i))
            [first, second] = await store.lease(now=1e6, limit=2, lease_for=1e6)
            await store.claim(function="f", key="k0", now=1e6, lease_until=2e6)
            await store.claim(function="f", key="k1", now=1e6, lease_until=2e6)
            await store.finish(second.id, function="f", key="k1", result=b"ok", expires_at=3e6)
            print("done", flush=True)
            time.sleep(60)

    anyio.run(main)
"""


async def test_committed_writes_survive_sigkill(db: Path) -> None:
    n = 200
    with anyio.fail_after(60):
        async with await anyio.open_process(
            python(CRASHING_OWNER, str(db), str(n)), env=CHILD_ENV
        ) as owner:
            assert owner.stdout is not None
            output = b""
            while b"done\n" not in output:
                output += await owner.stdout.receive()
            owner.kill()
            assert await owner.wait() == -signal.SIGKILL
    async with open_sqlite_store(db) as store:
        assert await store.pending() == n - 1
        events = await store.lease(now=1e6, limit=n, lease_for=30)
        assert [e.idempotency_key for e in events] == [f"k{i}" for i in range(n) if i != 1]
        assert all(e.payload == b"p%d" % int(e.idempotency_key[1:]) for e in events)
        assert await store.claim(function="f", key="k0", now=1e6, lease_until=2e6) == NEW
        done = await store.claim(function="f", key="k1", now=1e6, lease_until=2e6)
        assert done == Claim(ClaimState.COMPLETED, b"ok")


async def test_a_busy_database_raises_a_retriable_error(db: Path) -> None:
    async with open_sqlite_store(db, busy_timeout=0.05) as store:
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # e.g. a backup holding the write lock
            with pytest.raises(RetriableStateError, match="enqueue failed") as caught:
                await put(store, "k")
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await put(store, "k")


async def test_a_newer_schema_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as newer:
        newer.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="schema version 99 is newer"):
        async with open_sqlite_store(db):
            pass
    async with open_sqlite_store(db.with_name("fresh.db")):  # the lock was released
        pass


async def test_a_missing_directory_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot open lock file"):
        async with open_sqlite_store(tmp_path / "missing" / "state.db"):
            pass


async def test_concurrent_writes_commit_together_and_a_failing_one_fails_alone(db: Path) -> None:
    def boom(conn: object) -> None:
        raise ValueError("this job fails")

    failures: list[BaseException] = []

    async with open_sqlite_store(db) as store:

        async def failing() -> None:
            try:
                await store._run("boom", boom, write=True)
            except ValueError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(store.put_checkpoint, "src", f"k{i}", str(i).encode())
                if i == 100:
                    tg.start_soon(failing)
    assert [str(e) for e in failures] == ["this job fails"]
    async with open_sqlite_store(db) as reopened:
        saved = await reopened.get_checkpoints("src")
    assert saved == {f"k{i}": str(i).encode() for i in range(200)}
