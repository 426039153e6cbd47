"""Stream retry decisions: commit, retry, bisect, partial, discard; what counts as a retry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from connectors.kafka.format import parse_batch_item_failures
from streamfn.errors import ConfigError
from streamfn.streams.retry import (
    Bisect,
    Commit,
    Decision,
    Discard,
    Partial,
    Retry,
    RetryItem,
    StreamRetryPolicy,
)
from streamfn.types import InvocationResult, Outcome, StreamRecord

PARSE = parse_batch_item_failures  # the Kafka format's reading of partial responses
NOW = 1_700_000_000_000  # epoch ms; records are produced at NOW - 1000 + offset


def rec(offset: int, partition: int = 0, *, age_s: float = 1.0) -> StreamRecord:
    return StreamRecord(
        topic="orders",
        partition=partition,
        offset=offset,
        timestamp_ms=NOW - int(age_s * 1000),
    )


def item(*offsets: int) -> RetryItem:
    return RetryItem(records=tuple(rec(o) for o in offsets))


def result(outcome: Outcome, payload: bytes = b"null") -> InvocationResult:
    return InvocationResult(
        request_id="r",
        outcome=outcome,
        payload=payload,
        error_type="RuntimeError" if outcome is Outcome.FUNCTION_ERROR else None,
    )


OK = result(Outcome.SUCCESS)
ERROR = result(Outcome.FUNCTION_ERROR)
THROTTLED = result(Outcome.THROTTLED)


def partial(*ids: tuple[str, int]) -> InvocationResult:
    items = [{"itemIdentifier": {"partition": p, "offset": o}} for p, o in ids]
    return result(Outcome.SUCCESS, json.dumps({"batchItemFailures": items}).encode())


def offsets(records: tuple[StreamRecord, ...]) -> list[int]:
    return [r.offset for r in records]


def test_success_commits() -> None:
    decision = StreamRetryPolicy().decide(item(1, 2), OK, NOW, parse=PARSE)
    assert decision == Commit(records=item(1, 2).records)


def test_function_error_retries_with_capped_exponential_backoff() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=10, backoff_base_s=1, backoff_cap_s=5)
    current = item(1)
    delays = []
    for _ in range(5):
        decision = policy.decide(current, ERROR, NOW, parse=PARSE)
        assert isinstance(decision, Retry) and decision.counted
        delays.append(decision.delay_s)
        current = decision.item
    assert delays == [1, 2, 4, 5, 5]
    assert current.retries == 5 and current.invocations == 5
    assert isinstance(decision, Retry)
    assert "function error (FunctionError: RuntimeError); retry 5 of 10" in decision.reason


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.CRASHED])
def test_timeouts_and_crashes_are_counted_function_errors(outcome: Outcome) -> None:
    decision = StreamRetryPolicy(maximum_retry_attempts=0).decide(
        item(1), result(outcome), NOW, parse=PARSE
    )
    assert isinstance(decision, Discard)
    assert decision.condition == "RetryAttemptsExhausted"
    assert decision.item.invocations == 1


def test_retries_exhausted_after_maximum_retry_attempts() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=2)
    current = item(1, 2)
    invocations = 0
    while True:
        decision = policy.decide(current, ERROR, NOW, parse=PARSE)
        invocations += 1
        if not isinstance(decision, Retry):
            break
        current = decision.item
    assert invocations == 3  # the first try and 2 retries
    assert isinstance(decision, Discard)
    assert decision.condition == "RetryAttemptsExhausted"
    assert decision.item.invocations == 3 and offsets(decision.item.records) == [1, 2]
    assert "2 retry attempts exhausted" in decision.reason


def test_default_policy_retries_forever_and_says_so() -> None:
    policy = StreamRetryPolicy()
    current = item(1)
    for _ in range(200):
        decision = policy.decide(current, ERROR, NOW, parse=PARSE)
        assert isinstance(decision, Retry)
        current = decision.item
    assert isinstance(decision, Retry)
    assert decision.delay_s == policy.backoff_cap_s
    assert "retrying until the records exceed maximum_record_age" in decision.reason
    assert "of unlimited" in decision.reason


def test_infinite_retries_with_an_on_failure_destination_stop_at_10() -> None:
    policy = StreamRetryPolicy(has_on_failure_destination=True)
    assert policy.retry_limit == 10
    current = item(1)
    for _ in range(10):
        decision = policy.decide(current, ERROR, NOW, parse=PARSE)
        assert isinstance(decision, Retry)
        current = decision.item
    assert isinstance(policy.decide(current, ERROR, NOW, parse=PARSE), Discard)


def test_throttles_are_retried_without_counting() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=0, backoff_base_s=0.5, backoff_cap_s=3)
    current = item(1)
    delays = []
    for _ in range(5):
        decision = policy.decide(current, THROTTLED, NOW, parse=PARSE)
        assert isinstance(decision, Retry) and not decision.counted
        assert "not counted" in decision.reason
        delays.append(decision.delay_s)
        current = decision.item
    assert delays == [0.5, 1, 2, 3, 3]
    assert current.retries == 0 and current.invocations == 0 and current.throttles == 5
    decision = policy.decide(current, ERROR, NOW, parse=PARSE)  # the first real failure
    assert isinstance(decision, Discard) and decision.item.invocations == 1


def test_throttle_backoff_restarts_after_the_function_ran() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=5)
    decision = policy.decide(
        RetryItem(records=item(1).records, throttles=6), ERROR, NOW, parse=PARSE
    )
    assert isinstance(decision, Retry) and decision.item.throttles == 0


def test_throttled_records_are_discarded_once_too_old() -> None:
    policy = StreamRetryPolicy(maximum_record_age_s=60)
    old = RetryItem(records=(rec(1, age_s=61),))
    decision = policy.decide(old, THROTTLED, NOW, parse=PARSE)
    assert isinstance(decision, Discard) and decision.condition == "RecordAgeExceeded"
    assert decision.item.invocations == 0


def test_check_age_before_invoking() -> None:
    policy = StreamRetryPolicy(maximum_record_age_s=60)
    young = RetryItem(records=(rec(1, age_s=59), rec(2, age_s=1)))
    assert policy.check_age(young, NOW) is None
    assert policy.check_age(young, NOW + 1000) is None  # exactly 60 s: not older than
    discard = policy.check_age(young, NOW + 1001)
    assert isinstance(discard, Discard) and discard.condition == "RecordAgeExceeded"
    assert StreamRetryPolicy().check_age(young, NOW + 10**12) is None  # -1: no limit


def test_records_without_timestamp_do_not_age() -> None:
    policy = StreamRetryPolicy(maximum_record_age_s=60)
    stamped = msgspec.structs.replace(rec(1), timestamp_ms=-1)
    assert policy.check_age(RetryItem(records=(stamped,)), NOW) is None


def test_failed_records_that_are_too_old_are_discarded_not_retried() -> None:
    policy = StreamRetryPolicy(maximum_record_age_s=60, bisect_on_error=True)
    old = RetryItem(records=(rec(1, age_s=100), rec(2)))
    decision = policy.decide(old, ERROR, NOW, parse=PARSE)
    assert isinstance(decision, Discard) and decision.condition == "RecordAgeExceeded"
    assert decision.reason.startswith("function error")


def test_bisect_down_to_one_record_then_discard_after_retries() -> None:
    """A poison record among four: halves until it is alone, then its retries run out."""
    policy = StreamRetryPolicy(maximum_retry_attempts=1, bisect_on_error=True)

    def invoke(current: RetryItem) -> InvocationResult:
        return ERROR if 2 in offsets(current.records) else OK

    committed, discarded = run(policy, item(0, 1, 2, 3), invoke)
    assert committed == [0, 1, 3]
    assert [(offsets(d.item.records), d.condition, d.item.invocations) for d in discarded] == [
        ([2], "RetryAttemptsExhausted", 4)  # 4 records, 2, then 1 twice (1 retry)
    ]


def test_bisect_does_not_charge_retries() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=0, bisect_on_error=True)
    decision = policy.decide(item(0, 1, 2), ERROR, NOW, parse=PARSE)
    assert isinstance(decision, Bisect)
    assert offsets(decision.left.records) == [0] and offsets(decision.right.records) == [1, 2]
    assert decision.left.retries == 0 and decision.left.invocations == 1
    assert "not counted" in decision.reason
    single = policy.decide(decision.left, ERROR, NOW, parse=PARSE)
    assert isinstance(single, Discard) and single.item.invocations == 2


def test_bisected_halves_inherit_charged_retries() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=3, bisect_on_error=True)
    decision = policy.decide(
        RetryItem(records=item(0, 1).records, retries=3), ERROR, NOW, parse=PARSE
    )
    assert isinstance(decision, Bisect) and decision.right.retries == 3
    assert isinstance(policy.decide(decision.right, ERROR, NOW, parse=PARSE), Discard)


def test_partial_response_ignored_without_the_setting() -> None:
    decision = StreamRetryPolicy().decide(item(0, 1), partial(("orders-0", 1)), NOW, parse=PARSE)
    assert isinstance(decision, Commit)


def test_partial_response_finishes_records_before_the_lowest_failed_offset() -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True, maximum_retry_attempts=1)
    decision = policy.decide(
        item(10, 11, 12, 13), partial(("orders-0", 13), ("orders-0", 11)), NOW, parse=PARSE
    )
    assert isinstance(decision, Partial)
    assert offsets(decision.finished) == [10]
    assert isinstance(decision.then, Retry) and decision.then.counted
    assert offsets(decision.then.item.records) == [11, 12, 13]  # redelivered from 11
    assert decision.then.item.retries == 1 and decision.then.item.invocations == 1
    assert "partial batch failure (orders-0 from offset 11)" in decision.then.reason
    again = policy.decide(decision.then.item, partial(("orders-0", 12)), NOW, parse=PARSE)
    assert isinstance(again, Partial) and offsets(again.finished) == [11]
    assert isinstance(again.then, Discard) and again.then.condition == "RetryAttemptsExhausted"
    assert offsets(again.then.item.records) == [12, 13] and again.then.item.invocations == 2


def test_partial_response_failing_the_first_record_is_a_plain_retry() -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True, bisect_on_error=True)
    decision = policy.decide(item(10, 11), partial(("orders-0", 10)), NOW, parse=PARSE)
    assert isinstance(decision, Retry)  # not bisected: the handler said where it failed
    assert offsets(decision.item.records) == [10, 11]


def test_partial_response_over_several_partitions() -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True)
    records = (rec(1), rec(2), rec(3), rec(7, 1), rec(8, 1), rec(5, 2))
    decision = policy.decide(
        RetryItem(records=records), partial(("orders-1", 8), ("orders-0", 2)), NOW, parse=PARSE
    )
    assert isinstance(decision, Partial)
    assert [(r.partition, r.offset) for r in decision.finished] == [(0, 1), (1, 7), (2, 5)]
    assert isinstance(decision.then, Retry)
    assert [(r.partition, r.offset) for r in decision.then.item.records] == [
        (0, 2),
        (0, 3),
        (1, 8),
    ]


@pytest.mark.parametrize("payload", [b"null", b'"ok"', b"{}", b'{"batchItemFailures": []}'])
def test_partial_responses_meaning_success(payload: bytes) -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True)
    assert isinstance(
        policy.decide(item(1), result(Outcome.SUCCESS, payload), NOW, parse=PARSE), Commit
    )


@pytest.mark.parametrize(
    "response",
    [
        result(Outcome.SUCCESS, b'{"batchItemFailures": [{"itemIdentifier": ""}]}'),
        result(Outcome.SUCCESS, b'{"batchItemFailures": [{"itemIdentifier": null}]}'),
        partial(("orders-0", 99)),  # not in the batch
        partial(("orders-9", 1)),
    ],
)
def test_malformed_partial_response_is_a_counted_function_error(
    response: InvocationResult,
) -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True, maximum_retry_attempts=1)
    decision = policy.decide(item(1, 2), response, NOW, parse=PARSE)
    assert isinstance(decision, Retry) and decision.counted
    assert offsets(decision.item.records) == [1, 2]
    assert decision.reason.startswith("invalid partial batch response")
    bisecting = msgspec.structs.replace(policy, bisect_on_error=True)
    assert isinstance(bisecting.decide(item(1, 2), response, NOW, parse=PARSE), Bisect)


def test_partial_remainder_too_old_is_discarded_for_age() -> None:
    policy = StreamRetryPolicy(report_batch_item_failures=True, maximum_record_age_s=60)
    records = (rec(1, age_s=10), rec(2, age_s=70))
    decision = policy.decide(RetryItem(records=records), partial(("orders-0", 2)), NOW, parse=PARSE)
    assert isinstance(decision, Partial)
    assert isinstance(decision.then, Discard) and decision.then.condition == "RecordAgeExceeded"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maximum_retry_attempts", -2),
        ("maximum_retry_attempts", 10_001),
        ("maximum_record_age_s", 59),
        ("maximum_record_age_s", 604_801),
        ("backoff_base_s", 0),
    ],
)
def test_policy_rejects_out_of_range_values(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=field):
        StreamRetryPolicy(**kwargs)


def run(
    policy: StreamRetryPolicy,
    start: RetryItem,
    invoke: Callable[[RetryItem], InvocationResult],
) -> tuple[list[int], list[Discard]]:
    """The lane worker loop the driver implements, without sleeping."""
    stack = [start]
    committed: list[int] = []
    discarded: list[Discard] = []
    while stack:
        current = stack.pop()
        decision: Decision | None = policy.check_age(current, NOW)
        if decision is None:
            decision = policy.decide(current, invoke(current), NOW, parse=PARSE)
        if isinstance(decision, Partial):
            committed += offsets(decision.finished)
            decision = decision.then
        if isinstance(decision, Commit):
            committed += offsets(decision.records)
        elif isinstance(decision, Retry):
            stack.append(decision.item)
        elif isinstance(decision, Bisect):
            stack += [decision.right, decision.left]
        elif isinstance(decision, Discard):
            discarded.append(decision)
    return committed, discarded


def test_driver_loop_with_partial_responses_and_bisect() -> None:
    policy = StreamRetryPolicy(
        maximum_retry_attempts=2, bisect_on_error=True, report_batch_item_failures=True
    )
    calls: list[list[int]] = []

    def invoke(current: RetryItem) -> InvocationResult:
        calls.append(offsets(current.records))
        if 5 in offsets(current.records):
            return partial(("orders-0", 5))
        return OK

    committed, discarded = run(policy, item(3, 4, 5, 6), invoke)
    assert committed == [3, 4]
    assert calls == [[3, 4, 5, 6], [5, 6], [5, 6]]  # the first try and 2 retries
    assert [offsets(d.item.records) for d in discarded] == [[5, 6]]
