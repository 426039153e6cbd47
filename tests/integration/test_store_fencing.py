"""Lease tokens fence queue writes, the outbox, begin and settle: both backends.

Review C4: the queue's writes matched only the row id, so an instance whose lease had run
out could clear another instance's lease or delete the row it was running.
Postgres runs with two stores (two instances of a fleet); SQLite with one store and two
leases, as two dispatchers of one process would see it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from streamfn.state.base import (
    Claim,
    ClaimState,
    Completion,
    OutboxRecord,
    Requeue,
    Settlement,
    StateStore,
)
from streamfn.state.postgres import open_postgres_store
from streamfn.state.sqlite import SCHEMA_VERSION, open_sqlite_store

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """Two handles on one store: two Postgres instances, or one SQLite store twice."""
    if request.param == "sqlite":
        async with open_sqlite_store(tmp_path / "state.db") as sqlite:
            yield sqlite, sqlite
        return
    url = request.getfixturevalue("postgres_url")
    async with open_postgres_store(url) as a, open_postgres_store(url) as b:
        yield a, b


async def put(store: StateStore, key: str, *, function: str = "f", now: float = 0.0) -> None:
    assert await store.enqueue(
        function=function, payload=b"{}", request_id=f"req-{key}", idempotency_key=key,
        idempotency_ttl=60, now=now,
    )  # fmt: skip


async def test_a_late_requeue_does_not_clear_the_new_owners_lease(
    pair: tuple[StateStore, StateStore],
) -> None:
    a, b = pair
    await put(a, "k")
    [mine] = await a.lease(now=0.0, limit=1, lease_for=1)
    [theirs] = await b.lease(now=2.0, limit=1, lease_for=30)  # A's lease ran out
    assert theirs.id == mine.id and theirs.token != mine.token
    again = Settlement(
        now=2.0, requeue=Requeue(visible_at=0.0, attempts=9, invoke_count=9, throttles=0)
    )
    assert not await a.settle(mine, again)
    assert await a.lease(now=3.0, limit=1, lease_for=30) == []  # still leased to B
    assert not await a.settle(mine, Settlement(now=2.0))  # nor removed by A
    assert await a.pending() == 1
    assert await b.settle(theirs, again)
    [again] = await a.lease(now=3.0, limit=1, lease_for=30)
    assert (again.attempts, again.invoke_count) == (9, 9)


async def test_begin_and_settle_are_fenced(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair
    await put(a, "k")
    [mine] = await a.lease(now=0.0, limit=1, lease_for=1)
    [theirs] = await b.lease(now=2.0, limit=1, lease_for=30)
    assert await a.begin_many([(mine, 60.0)], now=2.0) == [None]
    assert await b.begin_many([(theirs, 60.0)], now=2.0) == [Claim(ClaimState.NEW)]
    done = Settlement(
        now=3.0,
        complete=Completion(result=b"r", expires_at=100.0),
        records=(OutboxRecord(destination="dir:ok", record=b"{}"),),
    )
    assert not await a.settle(mine, done)  # nothing written: no completion, no record
    assert await a.lease_outbox(now=3.0, limit=10, lease_for=30) == []
    assert await b.settle(theirs, done)
    assert await a.pending() == 0
    [entry] = await a.lease_outbox(now=4.0, limit=10, lease_for=30)
    assert entry.destination == "dir:ok" and entry.record == b"{}"
    await put(a, "k", now=4.0)  # the key is completed: a duplicate now
    [duplicate] = await a.lease(now=4.0, limit=1, lease_for=30)
    assert await a.begin_many([(duplicate, 9.0)], now=4.0) == [Claim(ClaimState.COMPLETED, b"r")]


async def test_begin_counts_the_attempt_and_extends_the_lease(
    pair: tuple[StateStore, StateStore],
) -> None:
    a, b = pair
    await put(a, "k")
    [event] = await a.lease(now=0.0, limit=1, lease_for=5)
    assert await a.begin_many([(event, 100.0)], now=1.0) == [Claim(ClaimState.NEW)]
    assert await b.lease(now=50.0, limit=1, lease_for=5) == []  # extended to 100
    [later] = await b.lease(now=100.0, limit=1, lease_for=5)  # the owner died mid-attempt
    assert (later.attempts, later.invoke_count) == (1, 1)
    requeue = Requeue(visible_at=100.0, attempts=1, invoke_count=1, throttles=3)
    assert await b.settle(later, Settlement(now=100.0, requeue=requeue))
    [again] = await a.lease(now=100.0, limit=1, lease_for=5)
    assert (again.attempts, again.throttles) == (1, 3)


async def test_an_instance_leases_only_the_functions_it_runs(
    pair: tuple[StateStore, StateStore],
) -> None:
    a, b = pair
    await put(a, "x", function="f")
    await put(a, "y", function="g", now=5.0)
    assert await a.next_due(functions=["g"]) == 5.0
    assert [
        e.function for e in await a.lease(now=10.0, limit=10, lease_for=5, functions=["g"])
    ] == ["g"]
    assert await b.next_due(functions=["h"]) is None
    assert await b.lease(now=10.0, limit=10, lease_for=5, functions=["h"]) == []
    dropped = await b.drop_orphans(keep=["g"], enqueued_before=1.0, now=10.0)
    assert [(d.function, d.request_id) for d in dropped] == [("f", "req-x")]
    assert await b.drop_orphans(keep=[], enqueued_before=100.0, now=10.0) == []  # g is leased


async def test_outbox_writes_are_fenced(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair
    await put(a, "k")
    [event] = await a.lease(now=0.0, limit=1, lease_for=5)
    record = OutboxRecord(destination="dir:failed", record=b'{"n": 1}')
    assert await a.settle(event, Settlement(now=0.0, records=(record,)))
    [mine] = await a.lease_outbox(now=1.0, limit=5, lease_for=1)
    assert await a.outbox_next_due() == 2.0
    [theirs] = await b.lease_outbox(now=3.0, limit=5, lease_for=10)
    assert not await a.outbox_done(mine.id, token=mine.token)
    assert not await a.outbox_retry(mine.id, token=mine.token, visible_at=0.0, attempts=1)
    assert await b.outbox_retry(theirs.id, token=theirs.token, visible_at=50.0, attempts=1)
    assert await a.outbox_next_due() == 50.0
    [again] = await a.lease_outbox(now=50.0, limit=5, lease_for=10)
    assert again.attempts == 1
    assert await a.outbox_done(again.id, token=again.token)
    assert await a.outbox_next_due() is None


def _version_1_database(path: Path) -> None:
    from streamfn.state import sqlite as backend

    conn = sqlite3.connect(path, isolation_level=None)
    for statement in backend._MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO queue (function, payload, request_id, idempotency_key, idempotency_ttl,"
        " enqueued_at, visible_at, attempts, invoke_count)"
        " VALUES ('f', x'7b7d', 'req-old', 'old', 60, 0, 0, 1, 1)"
    )
    conn.close()


async def test_a_version_1_sqlite_state_dir_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _version_1_database(path)
    opener: AbstractAsyncContextManager[StateStore] = open_sqlite_store(path)
    async with opener as store:
        [event] = await store.lease(now=1.0, limit=5, lease_for=5)
        assert (event.request_id, event.attempts, event.throttles) == ("req-old", 1, 0)
        assert await store.settle(event, Settlement(now=1.0))
        assert await store.lease_outbox(now=1.0, limit=5, lease_for=5) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
