"""The StateStore contract, run against every backend: SQLite and Postgres.

What the engine relies on of any state store (see :mod:`streamfn.state.base`): the queue's
FIFO leases, dedupe, lease expiry and retry; the idempotency claim transitions; finish
completing and acking together. Backend-specific behaviour (SQLite's single owner and
lock file, Postgres's fleet of instances) is tested in each backend's own module. Times are
passed in, never read. Postgres is required (CI has it): without it these tests fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from streamfn.state.base import Claim, ClaimState, StateStore
from streamfn.state.postgres import open_postgres_store
from streamfn.state.sqlite import open_sqlite_store

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


async def put(store: StateStore, key: str, now: float = 0.0, function: str = "f") -> bool:
    return await store.enqueue(
        function=function, payload=f"payload-{key}".encode(), request_id=f"req-{key}",
        idempotency_key=key, idempotency_ttl=60, now=now,
    )  # fmt: skip


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
    await store.ack(event.id)
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
    await store.retry_at(event.id, visible_at=45.0, attempts=1, invoke_count=1)
    assert await store.next_due() == 45.0
    await store.ack(event.id)
    assert await store.next_due() == 50.0


async def test_retry_at_releases_with_new_counts(store: StateStore) -> None:
    await put(store, "k", now=0.0)
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    await store.retry_at(event.id, visible_at=60.0, attempts=1, invoke_count=2)
    assert await keys(store, now=59.0) == []
    [again] = await store.lease(now=60.0, limit=1, lease_for=30)
    assert (again.id, again.request_id, again.enqueued_at) == (event.id, "req-k", 0.0)
    assert (again.attempts, again.invoke_count) == (1, 2)
    await store.ack(again.id)
    await store.retry_at(again.id, visible_at=0.0, attempts=3, invoke_count=3)  # gone: no-op
    await store.ack(again.id)
    assert await store.pending() == 0


async def test_claim_transitions(store: StateStore) -> None:
    claim = store.claim
    assert await claim(function="f", key="k", now=0.0, lease_until=30.0) == NEW
    assert await claim(function="f", key="k", now=10.0, lease_until=40.0) == IN_PROGRESS
    assert await claim(function="g", key="k", now=10.0, lease_until=40.0) == NEW  # per function
    # the owner crashed: its lease passed, so the next claimer owns the key
    assert await claim(function="f", key="k", now=30.0, lease_until=60.0) == NEW
    assert await claim(function="f", key="k", now=59.0, lease_until=90.0) == IN_PROGRESS
    await store.finish(None, function="f", key="k", result=b"answer", expires_at=100.0)
    completed = Claim(ClaimState.COMPLETED, b"answer")
    assert await claim(function="f", key="k", now=99.0, lease_until=130.0) == completed
    assert await claim(function="f", key="k", now=100.0, lease_until=130.0) == NEW  # expired
    assert await claim(function="f", key="k", now=101.0, lease_until=130.0) == IN_PROGRESS


async def test_release_drops_an_in_progress_claim_only(store: StateStore) -> None:
    assert await store.claim(function="f", key="k", now=0.0, lease_until=30.0) == NEW
    await store.release(function="f", key="k")
    assert await store.claim(function="f", key="k", now=1.0, lease_until=30.0) == NEW
    await store.finish(None, function="f", key="k", result=b"r", expires_at=100.0)
    await store.release(function="f", key="k")
    done = await store.claim(function="f", key="k", now=2.0, lease_until=30.0)
    assert done == Claim(ClaimState.COMPLETED, b"r")


async def test_finish_completes_and_acks_together(store: StateStore) -> None:
    await put(store, "k")
    await put(store, "other")
    event, _ = await store.lease(now=0.0, limit=2, lease_for=30)
    await store.claim(function="f", key="k", now=0.0, lease_until=30.0)
    await store.finish(event.id, function="f", key="k", result=b"ok", expires_at=60.0)
    assert await store.pending() == 1
    done = await store.claim(function="f", key="k", now=1.0, lease_until=30.0)
    assert done == Claim(ClaimState.COMPLETED, b"ok")


async def test_expire_deletes_expired_and_stale_records(store: StateStore) -> None:
    for key, expires in [("a", 10.0), ("b", 20.0), ("c", 30.0)]:
        await store.finish(None, function="f", key=key, result=b"", expires_at=expires)
    await store.claim(function="f", key="live", now=0.0, lease_until=100.0)
    await store.claim(function="f", key="stale", now=0.0, lease_until=15.0)
    assert await store.expire(now=20.0) == 3  # a, b (expiry reached) and stale
    assert await store.expire(now=20.0) == 0
    assert await store.claim(function="f", key="c", now=20.0, lease_until=50.0) == Claim(
        ClaimState.COMPLETED, b""
    )
    assert await store.claim(function="f", key="b", now=20.0, lease_until=50.0) == NEW
    assert await store.claim(function="f", key="live", now=20.0, lease_until=50.0) == IN_PROGRESS


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


async def test_ack_removes_only_its_event(store: StateStore) -> None:
    await put(store, "a")
    await put(store, "b")
    first, _ = await store.lease(now=0.0, limit=2, lease_for=30)
    await store.ack(first.id)
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
