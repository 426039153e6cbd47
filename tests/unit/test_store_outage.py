"""Riding out a state-store outage (streamfn.state.outage): retriable errors are retried with
capped backoff for as long as they last, on the clock passed in; the outage is logged once
when it starts and once when it ends; anything else is raised at once; cancellation stops
the retrying. Hermetic: fake bodies and a FakeClock."""

from __future__ import annotations

import logging

import anyio
import pytest

from streamfn.errors import RetriableStateError, StateError
from streamfn.state.outage import OutageRetry
from streamfn.testing import FakeClock

pytestmark = pytest.mark.anyio


class Flaky:
    """A store call failing with RetriableStateError until ``up`` is set; records when
    (on the fake clock) each attempt ran."""

    def __init__(self, clock: FakeClock, *, up: bool = False) -> None:
        self.clock = clock
        self.up = up
        self.attempts: list[float] = []

    async def __call__(self) -> str:
        self.attempts.append(self.clock.monotonic())
        if not self.up:
            raise RetriableStateError("state store db: lease failed: connection refused")
        return "leased"


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.outage"]


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.outage")
    return logging.getLogger("test.outage")


async def test_retriable_errors_are_retried_with_capped_backoff_until_the_store_is_back(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger
) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, first_wait=0.5, max_wait=4.0, logger=logger)
    body = Flaky(clock)
    results: list[str] = []
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await retry.run("lease", body))

        tg.start_soon(call)
        await clock.advance(60)  # a minute down: far more than any retry budget
        assert results == [] and retry.down_since == 0.0
        body.up = True
        await clock.advance(4)
    assert results == ["leased"]
    waits = [b - a for a, b in zip(body.attempts, body.attempts[1:], strict=False)]
    # at once, then doubling from first_wait up to max_wait, and never giving up
    assert waits[:6] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert set(waits[4:]) == {4.0}
    assert retry.down_since is None
    [(start_level, start), (end_level, end)] = outage_lines(caplog)
    assert start_level == "WARNING"
    assert start == (
        "state store db unavailable (lease: state store db: lease failed: connection refused);"
        " retrying every call until it is back"
    )
    assert (end_level, end) == ("INFO", f"state store db is back after {body.attempts[-1]:.1f} s")


async def test_an_outage_is_logged_once_however_many_calls_wait_it_out(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger
) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, logger=logger)
    bodies = [Flaky(clock) for _ in range(5)]
    async with anyio.create_task_group() as tg:
        for body in bodies:
            tg.start_soon(retry.run, "enqueue", body)
        await clock.advance(30)
        for body in bodies:
            body.up = True
        await clock.advance(5)
    assert all(len(body.attempts) > 5 for body in bodies)
    assert [level for level, _ in outage_lines(caplog)] == ["WARNING", "INFO"]


async def test_a_failure_that_started_before_the_store_came_back_does_not_reopen_the_outage(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger
) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, logger=logger)
    sent, proceed = anyio.Event(), anyio.Event()
    first = True

    async def in_flight() -> str:  # sent on a connection that is already dead
        nonlocal first
        if first:
            first = False
            sent.set()
            await proceed.wait()
            raise RetriableStateError("state store db: ack failed: server closed the connection")
        return "acked"

    async with anyio.create_task_group() as tg:
        tg.start_soon(retry.run, "lease", Flaky(clock))  # the outage begins
        await anyio.wait_all_tasks_blocked()
        assert retry.down_since is not None
        tg.start_soon(retry.run, "ack", in_flight)
        await sent.wait()
        assert await retry.run("lease", Flaky(clock, up=True)) == "leased"  # it is back
        proceed.set()  # the stale failure arrives, and its retry succeeds
        await anyio.wait_all_tasks_blocked()
        assert retry.down_since is None
        tg.cancel_scope.cancel()
    assert [level for level, _ in outage_lines(caplog)] == ["WARNING", "INFO"]


async def test_other_errors_are_raised_at_once(
    caplog: pytest.LogCaptureFixture, logger: logging.Logger
) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, logger=logger)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise StateError("state store db: finish failed: permission denied")

    with pytest.raises(StateError, match="permission denied") as caught:
        await retry.run("finish", broken)
    assert not isinstance(caught.value, RetriableStateError)
    assert calls == 1
    assert outage_lines(caplog) == []


async def test_a_closed_store_ends_the_retrying(logger: logging.Logger) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, logger=logger)
    closed = False
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        if closed:
            raise StateError("state store db: lease after close")
        raise RetriableStateError("state store db: lease failed: connection refused")

    async def lease() -> None:
        with pytest.raises(StateError, match="after close"):
            await retry.run("lease", call)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lease)
        await clock.advance(10)
        closed = True
        await clock.advance(10)
    assert calls > 2


async def test_cancelling_a_call_stops_its_retrying(logger: logging.Logger) -> None:
    clock = FakeClock()
    retry = OutageRetry("db", clock=clock, logger=logger)
    body = Flaky(clock)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry.run, "lease", body)
            await clock.advance(10)
            scope.cancel()
    assert scope.cancelled_caught
    tried = len(body.attempts)
    await clock.advance(60)
    assert len(body.attempts) == tried
    assert clock.sleepers == 0
