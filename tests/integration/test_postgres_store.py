"""The Postgres state store, against the real server: what test_state_store_contract.py
does not cover for every backend, and what a fleet relies on — disjoint leases, a crashed
instance's events coming back.

Each test runs in a fresh schema (named in the URL's search_path), dropped afterwards.
Times are passed in, never read: each test picks its own ``now``. Postgres is required:
without it these tests fail (CI has it), they do not skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import anyio
import anyio.lowlevel
import psycopg
import pytest

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.base import Claim, ClaimState, Completion, Settlement, StateStore
from streamfn.state.postgres import PostgresStore, open_postgres_store

pytestmark = pytest.mark.anyio

NEW = Claim(ClaimState.NEW)

Opener = Callable[[], AbstractAsyncContextManager[PostgresStore]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def open_store(postgres_url: str) -> Opener:
    return lambda: open_postgres_store(postgres_url)


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[PostgresStore]:
    async with open_store() as opened:
        yield opened


async def put(store: StateStore, key: str, now: float = 0.0, function: str = "f") -> bool:
    return await store.enqueue(
        function=function, payload=f"payload-{key}".encode(), request_id=f"req-{key}",
        idempotency_key=key, idempotency_ttl=60, now=now,
    )  # fmt: skip


async def keys(store: StateStore, now: float, limit: int = 100, lease_for: float = 30) -> list[str]:
    return [e.idempotency_key for e in await store.lease(now=now, limit=limit, lease_for=lease_for)]


# --- idempotency -----------------------------------------------------------------------------


async def test_a_settlement_is_one_transaction(store: PostgresStore, postgres_url: str) -> None:
    await put(store, "k")
    [event] = await store.lease(now=0.0, limit=1, lease_for=30)
    assert await store.begin_many([(event, 30.0)], now=0.0) == [NEW]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as other:
        await other.execute(  # make the removal half of the settlement fail
            "CREATE FUNCTION no_ack() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no'; END $$"
        )
        await other.execute(
            "CREATE TRIGGER no_ack BEFORE DELETE ON streamfn_queue"
            " FOR EACH ROW EXECUTE FUNCTION no_ack()"
        )
    done = Settlement(now=1.0, complete=Completion(result=b"ok", expires_at=60.0))
    with pytest.raises(StateError, match="settle failed") as caught:
        await store.settle(event, done)
    assert not isinstance(caught.value, RetriableStateError)
    assert isinstance(caught.value.__cause__, psycopg.Error)
    assert await store.pending() == 1
    assert await store.begin_many([(event, 30.0)], now=1.0) == [NEW]  # not completed


# --- lifecycle -------------------------------------------------------------------------------


async def test_reopen_keeps_state_and_resets_nothing(open_store: Opener) -> None:
    async with open_store() as store:
        for key in ("leased", "waiting"):
            await put(store, key, now=1.0)
        [leased] = await store.lease(now=5.0, limit=1, lease_for=100)
        assert await store.begin_many([(leased, 105.0)], now=5.0) == [NEW]
        await store.put_checkpoint("src", "pos", b"7")
    async with open_store() as store:  # another instance may still hold what was held
        assert await store.pending() == 2
        assert await keys(store, now=6.0, lease_for=1000) == ["waiting"]
        [again] = await store.lease(now=105.0, limit=10, lease_for=30)  # the lease ran out
        assert (again.idempotency_key, again.attempts) == ("leased", 1)
        assert await store.get_checkpoints("src") == {"pos": b"7"}


async def test_calls_after_close_fail(store: PostgresStore) -> None:
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StateError, match="pending after close"):
        await store.pending()


async def test_a_newer_schema_is_refused(open_store: Opener, postgres_url: str) -> None:
    async with open_store():
        pass
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as other:
        await other.execute("UPDATE streamfn_schema SET version = 99")
    with pytest.raises(StateError, match="schema version 99 is newer"):
        async with open_store():
            pass


async def test_an_unreachable_server_is_a_retriable_error() -> None:
    url = "postgresql://postgres:secret@127.0.0.1:1/test"
    with pytest.raises(RetriableStateError, match=r"postgresql://127\.0\.0\.1:1/test: open") as e:
        async with open_postgres_store(url, connect_timeout=2):
            pass
    assert "secret" not in str(e.value)
    assert isinstance(e.value.__cause__, psycopg.OperationalError)


async def test_a_malformed_url_is_a_state_error() -> None:
    with pytest.raises(StateError, match="invalid Postgres URL"):
        async with open_postgres_store("postgresql://127.0.0.1/test?bogus=1"):
            pass


# --- a fleet: several instances on one database ----------------------------------------------


async def test_instances_leasing_at_once_get_disjoint_events(open_store: Opener) -> None:
    n = 200
    async with open_store() as first, open_store() as second:
        for i in range(n):
            await put(first, f"k{i:03}")
        got: dict[str, list[str]] = {"first": [], "second": []}

        async def drain(name: str, store: PostgresStore) -> None:
            while batch := await keys(store, now=1.0, limit=7):
                got[name] += batch
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "first", first)
            tg.start_soon(drain, "second", second)
    assert got["first"] and got["second"]  # both took part
    assert sorted(got["first"] + got["second"]) == [f"k{i:03}" for i in range(n)]


async def test_a_crashed_instances_event_is_leased_again_after_its_lease(
    open_store: Opener,
) -> None:
    async with open_store() as survivor:
        async with open_store() as crashing:
            await put(crashing, "k", now=0.0)
            [event] = await crashing.lease(now=1.0, limit=10, lease_for=30)
            assert await crashing.begin_many([(event, 71.0)], now=1.0) == [NEW]
        # It "crashed": closed without settling, leaving its lease (its claim).
        assert await keys(survivor, now=70.9) == []
        assert await survivor.next_due() == 71.0
        [again] = await survivor.lease(now=71.0, limit=10, lease_for=70)
        assert (again.id, again.request_id) == (event.id, event.request_id)
        assert await survivor.begin_many([(again, 141.0)], now=71.0) == [NEW]
        done = Settlement(now=71.0, complete=Completion(result=b"ok", expires_at=999.0))
        assert not await survivor.settle(event, done)  # the crashed lease is stale
        assert await survivor.settle(again, done)
        assert await survivor.pending() == 0


async def test_setdefault_checkpoint_agrees_across_instances(open_store: Opener) -> None:
    async with open_store() as one, open_store() as two:
        values: list[bytes] = []

        async def start(store: PostgresStore, value: bytes) -> None:
            values.append(await store.setdefault_checkpoint("cron", "anchor", value))

        async with anyio.create_task_group() as tg:
            tg.start_soon(start, one, b"from-one")
            tg.start_soon(start, two, b"from-two")
        assert len(set(values)) == 1  # whichever committed first, both see it
        assert await two.get_checkpoints("cron") == {"anchor": values[0]}
