"""Async retry and age decisions, driven by explicit times (no clock, no sleeps)."""

from __future__ import annotations

import pytest

from streamfn.events.retry import AsyncRetryPolicy, Deliver, Discard, Retry
from streamfn.types import Outcome

AWS = AsyncRetryPolicy()  # 2 retries, 6 h, 60 s first delay


def test_success_is_delivered() -> None:
    assert AWS.after_attempt(Outcome.SUCCESS, attempts=0, throttles=0, now=0) == Deliver()


@pytest.mark.parametrize("outcome", [Outcome.FUNCTION_ERROR, Outcome.TIMEOUT, Outcome.CRASHED])
def test_function_errors_retry_after_one_then_two_minutes_then_give_up(outcome: Outcome) -> None:
    first = AWS.after_attempt(outcome, attempts=1, throttles=0, now=1000)
    assert isinstance(first, Retry) and first.at == 1060 and first.counts_as_attempt
    second = AWS.after_attempt(outcome, attempts=2, throttles=0, now=2000)
    assert isinstance(second, Retry) and second.at == 2120
    assert AWS.after_attempt(outcome, attempts=3, throttles=0, now=3000) == Discard(
        "RetriesExhausted"
    )


def test_zero_retries_gives_up_after_the_first_attempt() -> None:
    policy = AsyncRetryPolicy(maximum_retry_attempts=0)
    assert policy.after_attempt(Outcome.FUNCTION_ERROR, attempts=1, throttles=0, now=0) == Discard(
        "RetriesExhausted"
    )


def test_retry_delay_is_configurable() -> None:
    policy = AsyncRetryPolicy(retry_delay=0.5)
    decision = policy.after_attempt(Outcome.FUNCTION_ERROR, attempts=2, throttles=0, now=10)
    assert isinstance(decision, Retry) and decision.at == 11.0


def test_throttles_back_off_without_counting_as_attempts() -> None:
    delays = []
    for throttles in (1, 2, 3, 20):
        decision = AWS.after_attempt(Outcome.THROTTLED, attempts=0, throttles=throttles, now=0)
        assert isinstance(decision, Retry) and not decision.counts_as_attempt
        delays.append(decision.at)
    assert delays == [1, 2, 4, 300]


def test_zero_reserved_concurrency_discards_at_once() -> None:
    decision = AWS.after_attempt(
        Outcome.THROTTLED, attempts=0, throttles=1, now=0, reserved_concurrency=0
    )
    assert decision == Discard("ZeroReservedConcurrency")


def test_events_older_than_the_maximum_age_are_discarded() -> None:
    policy = AsyncRetryPolicy(maximum_event_age=60)
    assert policy.before_attempt(enqueued_at=100, now=160) is None
    assert policy.before_attempt(enqueued_at=100, now=160.5) == Discard("EventAgeExceeded")
