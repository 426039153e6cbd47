"""Every edge of the async event lifecycle (pure: fixed times, no store, no clock)."""

from __future__ import annotations

import logging

import msgspec
import pytest

from streamfn.events.lifecycle import (
    Begin,
    Claimed,
    EventPolicy,
    Finished,
    Leased,
    Run,
    Settle,
    decide,
)
from streamfn.events.retry import AsyncRetryPolicy
from streamfn.state.base import Completion, QueuedEvent, Requeue
from streamfn.state.claims import Claim, ClaimState
from streamfn.types import InvocationResult, Outcome, Report

T0 = 1_000_000.0
ARN = "arn:aws:lambda:local:000000000000:function:f:$LATEST"
POLICY = EventPolicy(
    retry=AsyncRetryPolicy(maximum_retry_attempts=2, maximum_event_age=3600, retry_delay=60),
    timeout=10,
    function_arn=ARN,
    on_success="dir:ok",
    on_failure="dir:failed",
)
REPORT = Report(duration_ms=1, billed_duration_ms=1, memory_size_mb=128, max_memory_used_mb=1)


def event(**fields: object) -> QueuedEvent:
    values: dict[str, object] = {
        "id": 7, "function": "f", "payload": b'{"n": 1}', "request_id": "req-1",
        "idempotency_key": "k", "idempotency_ttl": 600.0, "enqueued_at": T0, "token": 3,
    }  # fmt: skip
    values.update(fields)
    return QueuedEvent(**values)  # type: ignore[arg-type]


def result(outcome: Outcome, *, ran: bool = True, payload: bytes = b'"done"') -> InvocationResult:
    return InvocationResult(
        request_id="req-1", outcome=outcome, payload=payload, report=REPORT if ran else None
    )


def settle(plan: object) -> Settle:
    assert isinstance(plan, Settle), plan
    return plan


def record_of(plan: Settle) -> dict[str, object]:
    [record] = plan.settlement.records
    decoded: dict[str, object] = msgspec.json.decode(record.record)
    return decoded


# --- Leased ------------------------------------------------------------------------------


def test_a_young_event_with_a_slot_begins_with_the_claim_clock_starting_now() -> None:
    plan = decide(event(), Leased(slot=True), now=T0 + 5, policy=POLICY)
    assert plan == Begin(lease_until=T0 + 5 + 10 + 60)


def test_an_event_past_its_maximum_age_is_dropped_with_an_on_failure_record() -> None:
    plan = settle(decide(event(), Leased(slot=True), now=T0 + 3600.5, policy=POLICY))
    assert plan.outcome == "dropped:EventAgeExceeded" and plan.level == logging.ERROR
    assert plan.settlement.requeue is None
    record = record_of(plan)
    assert record["requestContext"] == {
        "requestId": "req-1",
        "functionArn": ARN,
        "condition": "EventAgeExceeded",
        "approximateInvokeCount": 0,
    }
    assert "responsePayload" not in record
    assert plan.settlement.records[0].destination == "dir:failed"


def test_exactly_the_maximum_age_still_runs() -> None:
    assert isinstance(decide(event(), Leased(slot=True), now=T0 + 3600, policy=POLICY), Begin)


def test_attempts_started_but_never_settled_run_out_like_failed_ones() -> None:
    # Three attempts began (max 2 retries) and each killed the engine before its outcome.
    plan = settle(
        decide(event(attempts=3, invoke_count=3), Leased(slot=True), now=T0 + 1, policy=POLICY)
    )
    assert plan.outcome == "dropped:RetriesExhausted"
    assert record_of(plan)["requestContext"]["approximateInvokeCount"] == 3  # type: ignore[index]


def test_the_last_allowed_attempt_after_a_crash_still_begins() -> None:
    plan = decide(event(attempts=2, invoke_count=2), Leased(slot=True), now=T0, policy=POLICY)
    assert isinstance(plan, Begin)


@pytest.mark.parametrize(("throttles", "delay"), [(0, 1), (1, 2), (2, 4), (8, 256), (9, 300)])
def test_no_slot_goes_back_with_throttle_backoff_not_counted_as_an_attempt(
    throttles: int, delay: float
) -> None:
    queued = event(attempts=1, invoke_count=1, throttles=throttles)
    plan = settle(decide(queued, Leased(slot=False), now=T0 + 10, policy=POLICY))
    assert plan.outcome == "throttled"
    assert plan.settlement.requeue == Requeue(
        visible_at=T0 + 10 + delay, attempts=1, invoke_count=1, throttles=throttles + 1
    )
    assert plan.settlement.records == ()


def test_throttled_events_still_age_out() -> None:
    plan = settle(decide(event(throttles=40), Leased(slot=False), now=T0 + 4000, policy=POLICY))
    assert plan.outcome == "dropped:EventAgeExceeded"


def test_zero_reserved_concurrency_drops_at_once() -> None:
    policy = msgspec.structs.replace(POLICY, reserved_concurrency=0)
    plan = settle(decide(event(), Leased(slot=False), now=T0, policy=policy))
    assert plan.outcome == "dropped:ZeroReservedConcurrency"
    assert record_of(plan)["requestContext"]["condition"] == "ZeroReservedConcurrency"  # type: ignore[index]


# --- Claimed -----------------------------------------------------------------------------


def test_a_new_claim_runs() -> None:
    plan = decide(event(attempts=1), Claimed(Claim(ClaimState.NEW)), now=T0, policy=POLICY)
    assert plan == Run()


def test_a_completed_key_is_removed_without_running_or_recording() -> None:
    claim = Claim(ClaimState.COMPLETED, b"earlier")
    plan = settle(decide(event(), Claimed(claim), now=T0, policy=POLICY))
    assert plan.outcome == "duplicate"
    assert plan.settlement.requeue is None and plan.settlement.complete is None
    assert plan.settlement.records == ()


def test_a_key_held_elsewhere_is_looked_at_again_in_a_second_with_counts_kept() -> None:
    queued = event(attempts=1, invoke_count=1, throttles=2)
    plan = settle(decide(queued, Claimed(Claim(ClaimState.IN_PROGRESS)), now=T0, policy=POLICY))
    assert plan.outcome == "busy"
    assert plan.settlement.requeue == Requeue(
        visible_at=T0 + 1, attempts=1, invoke_count=1, throttles=2
    )


# --- Finished ----------------------------------------------------------------------------


def test_success_completes_the_key_and_records_on_success_in_the_same_write() -> None:
    running = event(attempts=1, invoke_count=1)
    plan = settle(decide(running, Finished(result(Outcome.SUCCESS)), now=T0 + 2, policy=POLICY))
    assert plan.outcome == "succeeded"
    assert plan.settlement.complete == Completion(result=b'"done"', expires_at=T0 + 2 + 600)
    assert plan.settlement.requeue is None
    record = record_of(plan)
    assert record["requestContext"]["condition"] == "Success"  # type: ignore[index]
    assert record["requestContext"]["approximateInvokeCount"] == 1  # type: ignore[index]
    assert record["responsePayload"] == "done"
    assert plan.settlement.records[0].destination == "dir:ok"


def test_success_without_on_success_writes_no_record() -> None:
    policy = msgspec.structs.replace(POLICY, on_success=None)
    plan = settle(
        decide(event(attempts=1), Finished(result(Outcome.SUCCESS)), now=T0, policy=policy)
    )
    assert plan.settlement.records == () and plan.settlement.complete is not None


@pytest.mark.parametrize("outcome", [Outcome.FUNCTION_ERROR, Outcome.TIMEOUT, Outcome.CRASHED])
@pytest.mark.parametrize(("attempts", "delay"), [(1, 60), (2, 120)])
def test_an_error_with_retries_left_is_requeued(
    outcome: Outcome, attempts: int, delay: float
) -> None:
    running = event(attempts=attempts, invoke_count=attempts)
    plan = settle(decide(running, Finished(result(outcome)), now=T0 + 5, policy=POLICY))
    assert plan.outcome == "retried" and plan.level == logging.WARNING
    assert plan.settlement.complete is None
    assert plan.settlement.requeue == Requeue(
        visible_at=T0 + 5 + delay, attempts=attempts, invoke_count=attempts, throttles=0
    )


def test_the_last_error_drops_the_event_with_retries_exhausted() -> None:
    running = event(attempts=3, invoke_count=3)
    failure = result(Outcome.FUNCTION_ERROR, payload=b'{"errorType": "ValueError"}')
    plan = settle(decide(running, Finished(failure), now=T0 + 5, policy=POLICY))
    assert plan.outcome == "dropped:RetriesExhausted"
    assert plan.settlement.requeue is None
    record = record_of(plan)
    assert record["requestContext"]["approximateInvokeCount"] == 3  # type: ignore[index]
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"] == {"errorType": "ValueError"}


def test_an_attempt_the_runtime_never_started_is_uncounted() -> None:
    running = event(attempts=1, invoke_count=1)
    plan = settle(
        decide(running, Finished(result(Outcome.CRASHED, ran=False)), now=T0, policy=POLICY)
    )
    assert plan.outcome == "retried"
    assert plan.settlement.requeue == Requeue(
        visible_at=T0 + 60, attempts=0, invoke_count=0, throttles=0
    )


def test_a_throttled_result_backs_off_as_a_throttle() -> None:
    running = event(attempts=1, invoke_count=1, throttles=1)
    plan = settle(
        decide(running, Finished(result(Outcome.THROTTLED, ran=False)), now=T0, policy=POLICY)
    )
    assert plan.outcome == "throttled"
    assert plan.settlement.requeue == Requeue(
        visible_at=T0 + 2, attempts=0, invoke_count=0, throttles=2
    )


def test_a_function_destination_is_queued_in_the_same_write_not_the_outbox() -> None:
    policy = msgspec.structs.replace(POLICY, on_failure="function:dlq")
    running = event(attempts=3, invoke_count=3)
    plan = settle(decide(running, Finished(result(Outcome.FUNCTION_ERROR)), now=T0, policy=policy))
    assert plan.settlement.records == ()
    [queued] = plan.settlement.enqueue
    assert queued.function == "dlq"
    assert queued.idempotency_key == "destination:req-1:RetriesExhausted"
    payload = msgspec.json.decode(queued.payload)
    assert payload["requestContext"]["approximateInvokeCount"] == 3
    again = settle(decide(running, Finished(result(Outcome.FUNCTION_ERROR)), now=T0, policy=policy))
    assert (
        again.settlement.enqueue[0].request_id == queued.request_id
    )  # pure: same input, same plan
