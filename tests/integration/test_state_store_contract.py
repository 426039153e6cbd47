"""The StateStore contract, run against every backend: SQLite and Postgres.

What the engine relies on of any state store (see :mod:`streamfn.state.base`): the queue's
FIFO leases, dedupe, lease expiry and requeue; what ``begin_many`` makes of a key's record
(NEW, a COMPLETED duplicate, a legacy IN_PROGRESS claim); a settlement completing and
removing together. Backend-specific behaviour (SQLite's single owner and
lock file, Postgres's fleet of instances) is tested in each backend's own module. Times are
passed in, never read. Postgres is required (CI has it): without it these tests fail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import psycopg
import pytest

from streamfn.state.base import (
    Claim,
    ClaimState,
    Completion,
    QueuedEvent,
    Requeue,
    Settlement,
    StateStore,
)
from streamfn.state.postgres import open_postgres_store
from streamfn.state.sqlite import SqliteStore, open_sqlite_store

pytestmark = pytest.mark.anyio

NEW = Claim(ClaimState.NEW)
IN_PROGRESS = Claim(ClaimState.IN_PROGRESS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        async with open_sqlite_store(tmp_path / "state.db") as sqlite:
            yield sqlite
    else:
        url = request.getfixturevalue("postgres_url")
        async with open_postgres_store(url) as postgres:
            yield postgres


LegacyClaim = Callable[[str, float], Awaitable[None]]


@pytest.fixture
def legacy_claim(store: StateStore, tmp_path: Path, request: pytest.FixtureRequest) -> LegacyClaim:
    """Writes an IN_PROGRESS record of function f, as an older streamfn's ``claim`` did,
    through a connection of its own."""

    async def write(key: str, lease_until: float) -> None:
        row = ("f", key, lease_until)
        if isinstance(store, SqliteStore):
            with sqlite3.connect(tmp_path / "state.db") as conn:
                conn.execute(
                    "INSERT INTO idempotency (function, key, state, lease_until)"
                    " VALUES (?, ?, 'in_progress', ?)",
                    row,
                )
            return
        url = request.getfixturevalue("postgres_url")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO streamfn_idempotency (function, key, state, lease_until)"
                " VALUES (%s, %s, 'in_progress', %s)",
                row,
            )

    return write


async def put(store: StateStore, key: str, now: float = 0.0, function: str = "f") -> bool:
    return await store.enqueue(
        function=function, payload=f"payload-{key}".encode(), request_id=f"req-{key}",
        idempotency_key=key, idempotency_ttl=60, now=now,
    )  # fmt: skip


async def begin(store: StateStore, event: QueuedEvent, now: float) -> Claim | None:
    [claim] = await store.begin_many([(event, now + 30)], now=now)
    return claim


async def requeue(
    store: StateStore, event: QueuedEvent, visible_at: float, attempts: int, invoke_count: int
) -> bool:
    again = Requeue(
        visible_at=visible_at, attempts=attempts, invoke_count=invoke_count, throttles=0
    )
    return await store.settle(event, Settlement(now=0.0, requeue=again))


async def remove(store: StateStore, event: QueuedEvent) -> bool:
    return await store.settle(event, Settlement(now=0.0))


async def complete(store: StateStore, event: QueuedEvent, result: bytes, expires_at: float) -> bool:
    done = Completion(result=result, expires_at=expires_at)
    return await store.settle(event, Settlement(now=0.0, complete=done))


async def claim_of(store: StateStore, key: str, now: float, function: str = "f") -> Claim | None:
    """What ``begin_many`` makes of ``key`` at ``now``: queue it anew and begin it (the
    queue must hold nothing else due then), then remove it again."""
    assert await put(store, key, now=now, function=function)
    [event] = await store.lease(now=now, limit=1, lease_for=30)
    assert event.idempotency_key == key
    claim = await begin(store, event, now)
    assert await remove(store, event)
    return claim


async def keys(store: StateStore, now: float, limit: int = 100, lease_for: float = 30) -> list[str]:
    return [e.idempotency_key for e in await store.lease(now=now, limit=limit, lease_for=lease_for)]


async def test_enqueue_then_lease_returns_the_event(store: StateStore) -> None:
    assert await put(store, "k1", now=10.0)
    [event] = await store.lease(now=10.0, limit=10, lease_for=30)
    assert (event.function, event.payload, event.request_id) == ("f", b"payload-k1", "req-k1")
    assert (event.idempotency_key, event.idempotency_ttl, event.enqueued_at) == ("k1", 60, 10.0)
    assert (event.attempts, event.invoke_count) == (0, 0)
    assert await store.pending() == 1


async def test_enqueue_dedupes_per_function_and_key_while_queued(store: StateStore) -> None:
    assert await put(store, "k1")
    assert not await put(store, "k1", now=5.0)
    assert await put(store, "k1", function="other")
    assert await store.pending() == 2
    [event] = await store.lease(now=5.0, limit=1, lease_for=30)
    assert event.payload == b"payload-k1" and event.enqueued_at == 0.0
    assert not await put(store, "k1")  # leased is still queued
    assert await remove(store, event)
    assert await put(store, "k1")  # gone from the queue: idempotency records take over


async def test_lease_is_fifo_by_due_time_then_arrival(store: StateStore) -> None:
    for key, now in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
        await put(store, key, now=now)
    assert await keys(store, now=10.0) == ["a", "a2", "b", "c"]


async def test_lease_skips_events_not_yet_due(store: StateStore) -> None:
    await put(store, "later", now=50.0)
    assert await keys(store, now=49.9) == []
    assert await keys(store, now=50.0) == ["later"]


async def test_an_expired_lease_is_delivered_again(store: StateStore) -> None:
    await put(store, "k", now=0.0)
    await put(store, "fresh", now=35.0)
    assert await keys(store, now=0.0, lease_for=30) == ["k"]
    assert await keys(store, now=29.9) == []
    assert await keys(store, now=30.0) == ["k"]  # ends at 30: due again, oldest first
    assert await keys(store, now=40.0) == ["fresh"]


async def test_next_due(store: StateStore) -> None:
    assert await store.next_due() is None
    await put(store, "a", now=10.0)
    assert await store.next_due() == 10.0
    [event] = await store.lease(now=12.0, limit=1, lease_for=30)
    assert await store.next_due() == 42.0  # only a lease, which expires at 42
    await put(store, "b", now=50.0)
    assert await store.next_due() == 42.0
    [event] = await store.lease(now=42.0, limit=1, lease_for=30)
    assert await requeue(store, event, visible_at=45.0, attempts=1, invoke_count=1)
    assert await store.next_due() == 45.0
    [event] = await store.lease(now=45.0, limit=1, lease_for=30)
    assert await remove(store, event)
    assert await store.next_due() == 50.0


async def test_a_requeue_releases_with_new_counts(store: StateStore) -> None:
    await put(store, "k", now=0.0)
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await requeue(store, event, visible_at=60.0, attempts=1, invoke_count=2)
    assert await keys(store, now=59.0) == []
    [again] = await store.lease(now=60.0, limit=1, lease_for=30)
    assert (again.id, again.request_id, again.enqueued_at) == (event.id, "req-k", 0.0)
    assert (again.attempts, again.invoke_count) == (1, 2)
    assert await remove(store, again)
    assert not await requeue(store, again, visible_at=0.0, attempts=3, invoke_count=3)  # gone
    assert not await remove(store, again)
    assert await store.pending() == 0


async def test_a_repeated_begin_counts_its_attempt_once(store: StateStore) -> None:
    """A begin retried after a lost connection whose transaction had committed writes the
    same counts again, never one more (the outage retry may repeat any call)."""
    await put(store, "k", now=0.0)
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await requeue(store, event, visible_at=0.0, attempts=2, invoke_count=3)
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await store.begin_many([(event, 40.0)], now=0.0) == [NEW]
    assert await store.begin_many([(event, 40.0)], now=0.0) == [NEW]  # the retry
    [again] = await store.lease(now=40.0, limit=1, lease_for=30)
    assert (again.attempts, again.invoke_count) == (3, 4)


async def test_begin_sees_a_completed_key_as_a_duplicate_until_its_ttl(
    store: StateStore,
) -> None:
    assert await claim_of(store, "k", now=0.0) == NEW
    await put(store, "k", now=0.0)
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await begin(store, event, now=0.0) == NEW
    assert await complete(store, event, b"answer", expires_at=100.0)
    assert await store.pending() == 0  # completed and removed together
    assert await claim_of(store, "k", now=99.0) == Claim(ClaimState.COMPLETED, b"answer")
    assert await claim_of(store, "k", now=99.0, function="g") == NEW  # per function
    assert await claim_of(store, "k", now=100.0) == NEW  # the TTL has passed


async def test_a_stale_begin_writes_nothing_and_a_stale_settle_completes_nothing(
    store: StateStore,
) -> None:
    await put(store, "k")
    [old] = await store.lease(now=0.0, limit=1, lease_for=1)
    [current] = await store.lease(now=1.0, limit=1, lease_for=30)  # old's lease ran out
    assert await begin(store, old, now=1.0) is None
    assert not await complete(store, old, b"late", expires_at=100.0)
    assert await store.pending() == 1
    assert await begin(store, current, now=1.0) == NEW
    assert await remove(store, current)
    assert await claim_of(store, "k", now=2.0) == NEW  # the stale settle completed nothing


async def test_expire_deletes_expired_records(store: StateStore) -> None:
    for key, expires in [("a", 10.0), ("b", 20.0), ("c", 30.0)]:
        await put(store, key)
        [event] = await store.lease(now=0.0, limit=1, lease_for=30)
        assert await complete(store, event, b"", expires_at=expires)
    assert await store.expire(now=20.0) == 2  # a, b: expiry reached
    assert await store.expire(now=20.0) == 0
    assert await claim_of(store, "c", now=20.0) == Claim(ClaimState.COMPLETED, b"")
    assert await claim_of(store, "b", now=20.0) == NEW


async def test_a_legacy_in_progress_claim_holds_its_key_until_its_lease_or_expire(
    store: StateStore, legacy_claim: LegacyClaim
) -> None:
    await legacy_claim("held", 50.0)
    await legacy_claim("stale", 15.0)
    assert await claim_of(store, "held", now=10.0) == IN_PROGRESS  # nothing counted
    assert await claim_of(store, "stale", now=10.0) == IN_PROGRESS
    assert await store.expire(now=20.0) == 1  # stale: its lease has passed
    assert await claim_of(store, "held", now=49.0) == IN_PROGRESS
    assert await claim_of(store, "held", now=50.0) == NEW  # the owner crashed or hung
    assert await claim_of(store, "stale", now=20.0) == NEW


async def test_lease_respects_limit_and_never_hands_out_an_event_twice(
    store: StateStore,
) -> None:
    for i in range(5):
        await put(store, f"k{i}", now=float(i))
    assert await keys(store, now=10.0, limit=2) == ["k0", "k1"]
    assert await keys(store, now=10.0, limit=2) == ["k2", "k3"]
    assert await keys(store, now=10.0, limit=2) == ["k4"]
    assert await keys(store, now=10.0, limit=2) == []
    assert await store.lease(now=10.0, limit=0, lease_for=30) == []
    assert await store.pending() == 5


async def test_a_removing_settle_removes_only_its_event(store: StateStore) -> None:
    await put(store, "a")
    await put(store, "b")
    first, _ = await store.lease(now=0.0, limit=2, lease_for=30)
    assert await remove(store, first)
    assert await store.pending() == 1
    assert await keys(store, now=100.0) == ["b"]


async def test_checkpoints(store: StateStore) -> None:
    assert await store.get_checkpoints("src") == {}
    await store.put_checkpoint("src", "a", b"1")
    await store.put_checkpoint("src", "b", b"2")
    await store.put_checkpoint("src", "a", b"3")
    await store.put_checkpoint("other", "a", b"x")
    assert await store.get_checkpoints("src") == {"a": b"3", "b": b"2"}
    await store.delete_checkpoint("src", "a")
    await store.delete_checkpoint("src", "missing")
    assert await store.get_checkpoints("src") == {"b": b"2"}
    assert await store.get_checkpoints("other") == {"a": b"x"}


async def test_a_cancelled_call_still_finishes_its_transaction(store: StateStore) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await put(store, "k")
        await anyio.lowlevel.checkpoint()  # where the cancellation lands
        pytest.fail("not cancelled")
    assert scope.cancelled_caught
    assert await store.pending() == 1


async def test_enqueue_writes_its_checkpoint_in_the_same_transaction(store: StateStore) -> None:
    common = {"function": "f", "payload": b"{}", "idempotency_ttl": 60.0, "now": 0.0}
    assert await store.enqueue(
        request_id="r1", idempotency_key="k", **common, checkpoint=("src", "file-a", b"v1")
    )
    # A duplicate queues nothing, but its checkpoint is still written.
    assert not await store.enqueue(
        request_id="r2", idempotency_key="k", **common, checkpoint=("src", "file-a", b"v2")
    )
    assert await store.get_checkpoints("src") == {"file-a": b"v2"}
    assert await store.pending() == 1


async def test_setdefault_checkpoint_keeps_the_first_value(store: StateStore) -> None:
    assert await store.setdefault_checkpoint("src", "anchor", b"first") == b"first"
    assert await store.setdefault_checkpoint("src", "anchor", b"second") == b"first"
    assert await store.get_checkpoints("src") == {"anchor": b"first"}
