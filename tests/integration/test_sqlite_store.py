"""The SQLite state store, on real files: what test_state_store_contract.py does not cover
for every backend — crash recovery, single ownership, group commit.

Times are passed in, never read: each test picks its own ``now``.
"""

from __future__ import annotations

import logging
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
from streamfn.state.base import (
    Claim,
    ClaimState,
    Completion,
    Requeue,
    Settlement,
    StateStore,
)
from streamfn.state.sqlite import SqliteStore, open_sqlite_store

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
NEW = Claim(ClaimState.NEW)


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


async def test_a_settlement_is_one_transaction(store: SqliteStore, db: Path) -> None:
    await put(store, "k")
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await store.begin_many([(event, 30.0)], now=0.0) == [NEW]
    with sqlite3.connect(db) as other:  # make the removal half of the settlement fail
        other.execute(
            "CREATE TRIGGER no_ack BEFORE DELETE ON queue BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    done = Settlement(now=1.0, complete=Completion(result=b"ok", expires_at=60.0))
    with pytest.raises(StateError, match="settle failed") as caught:
        await store.settle(event, done)
    assert not isinstance(caught.value, RetriableStateError)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    assert await store.pending() == 1
    assert await store.begin_many([(event, 30.0)], now=1.0) == [NEW]  # not completed


# --- lifecycle: reopen, ownership, crashes ---------------------------------------------------


async def test_reopen_keeps_state_and_resets_what_the_last_owner_held(db: Path) -> None:
    async with open_sqlite_store(db) as store:
        for key in ("leased", "waiting", "done"):
            await put(store, key, now=1.0)
        await put(store, "retry", now=2.0)
        leased = await store.lease(now=5.0, limit=4, lease_for=1000)
        later = Requeue(visible_at=500.0, attempts=1, invoke_count=1, throttles=0)
        assert await store.settle(leased[-1], Settlement(now=5.0, requeue=later))
        done = Completion(result=b"r", expires_at=900.0)
        assert await store.settle(leased[2], Settlement(now=5.0, complete=done))
        await store.put_checkpoint("src", "pos", b"7")
    with sqlite3.connect(db) as other:  # a claim an older streamfn held when it died
        other.execute(
            "INSERT INTO idempotency (function, key, state, lease_until)"
            " VALUES ('f', 'leased', 'in_progress', 1000.0)"
        )
    async with open_sqlite_store(db) as store:
        assert await store.pending() == 3
        assert await store.next_due() == 1.0
        events = await store.lease(now=6.0, lease_for=1e4, limit=100)  # due at once
        assert [e.idempotency_key for e in events] == ["leased", "waiting"]
        assert await store.begin_many([(events[0], 1e4)], now=6.0) == [NEW]  # claim reset
        assert await keys(store, now=500.0) == ["retry"]
        await put(store, "done", now=6.0)
        [duplicate] = await store.lease(now=6.0, limit=1, lease_for=30)
        completed = Claim(ClaimState.COMPLETED, b"r")
        assert await store.begin_many([(duplicate, 60.0)], now=6.0) == [completed]
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
    from streamfn.state.base import Completion, Settlement
    from streamfn.state.sqlite import open_sqlite_store

    async def main() -> None:
        async with open_sqlite_store(Path(sys.argv[1])) as store:
            for i in range(int(sys.argv[2])):
                await store.enqueue(function="f", payload=b"p%d" % i, request_id=f"r{i}",
                                    idempotency_key=f"k{i}", idempotency_ttl=60, now=float(i))
            [first, second] = await store.lease(now=1e6, limit=2, lease_for=1e6)
            await store.begin_many([(first, 2e6), (second, 2e6)], now=1e6)
            done = Completion(result=b"ok", expires_at=3e6)
            await store.settle(second, Settlement(now=1e6, complete=done))
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
        assert (events[0].attempts, events[0].invoke_count) == (1, 1)  # begun, counted
        assert await store.begin_many([(events[0], 2e6)], now=1e6) == [NEW]
        await put(store, "k1", now=1e6)
        [duplicate] = await store.lease(now=1e6, limit=1, lease_for=30)
        completed = Claim(ClaimState.COMPLETED, b"ok")
        assert await store.begin_many([(duplicate, 2e6)], now=1e6) == [completed]


async def test_a_busy_database_is_waited_out(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamfn.state")
    waiting = anyio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            waiting.set()

    logging.getLogger("streamfn.state").addHandler(seen := Seen(logging.WARNING))
    async with open_sqlite_store(db, busy_timeout=0.05) as store:
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # e.g. a backup holding the write lock
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def enqueue() -> None:
                    assert await put(store, "k")
                    done.set()

                tg.start_soon(enqueue)
                with anyio.fail_after(10):
                    await waiting.wait()  # the outage is logged ...
                assert not done.is_set()  # ... and the call waits it out
                other.execute("ROLLBACK")
                with anyio.fail_after(10):
                    await done.wait()
        finally:
            other.close()
            logging.getLogger("streamfn.state").removeHandler(seen)
    outage = [r for r in caplog.records if r.name == "streamfn.state"]
    assert [r.levelname for r in outage] == ["WARNING", "INFO"], caplog.text
    assert "enqueue: state store" in outage[0].getMessage()
    assert "database is locked" in outage[0].getMessage()
    assert "is back after" in outage[1].getMessage()


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
