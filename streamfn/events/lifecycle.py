"""The life of one queued async event, as a pure state machine.

Theory of operation
-------------------

The dispatcher leases an event, then asks :func:`decide` what to do at each of three
steps, doing only the I/O the answer names: take a concurrency slot (``Leased``), look
up the key and count the attempt (``Claimed``), run the handler (``Finished``). Every
answer is a plan: :class:`Begin` (key lookup + count + extend the lease, one store
transaction),
:class:`Run` (invoke in the slot), or :class:`Settle` (one fenced store transaction that
writes the decision *and* its destination records, then the event is out of this
dispatcher's hands). Nothing here reads a clock or touches the store: ``now`` and the
step's input are passed in, so every edge below is a unit test with fixed times.

Transitions (``max`` = ``maximum_retry_attempts``; records go to the outbox, or into the
queue for ``function:`` destinations, in the same transaction as the decision)::

    step      condition                           plan
    ────────  ──────────────────────────────────  ─────────────────────────────────────────
    Leased    age > maximum_event_age             Settle: remove; on_failure EventAgeExceeded
    Leased    attempts > max (started and never   Settle: remove; on_failure RetriesExhausted
              settled: they killed the engine)
    Leased    no slot, reserved concurrency 0     Settle: remove;
                                                  on_failure ZeroReservedConcurrency
    Leased    no slot                             Settle: requeue at now + throttle backoff
                                                  (1 s doubling to 5 min), throttles + 1
    Leased    slot granted                        Begin: count, lease until now + timeout
                                                  + margin
    Claimed   COMPLETED                           Settle: remove (a duplicate; nothing runs)
    Claimed   IN_PROGRESS (held elsewhere)        Settle: requeue at now + 1 s, counts kept
    Claimed   NEW (attempts, invoke_count + 1     Run
              already stored by Begin)
    Finished  success                             Settle: remove; key COMPLETED with the
                                                  result; on_success Success
    Finished  throttled, or never started         Settle: requeue (throttle backoff, or the
              (no report)                         retry delay); this attempt uncounted
    Finished  error, attempts <= max              Settle: requeue at now + retry delay
    Finished  error, attempts > max               Settle: remove; on_failure RetriesExhausted

Failure edges the dispatcher handles around the plans: ``begin`` or ``settle`` answering
"lease lost" (another dispatcher leased the event after ours ran out) ends the event
here with nothing written; a store error leaves the event leased, and it comes back when
the lease runs out. A crash anywhere leaves the event queued: before ``begin`` it is
simply leased again; after it the attempt is already counted, so an event that keeps
killing the engine runs out of attempts (second ``Leased`` edge) instead of looping.
"""

from __future__ import annotations

import logging
import uuid

import msgspec

from streamfn.events.records import async_destination_record
from streamfn.events.retry import AsyncRetryPolicy, Deliver, Discard, Retry
from streamfn.invoke.destinations import FunctionDestination, parse_destination
from streamfn.state.base import (
    Completion,
    NewEvent,
    OutboxRecord,
    QueuedEvent,
    Requeue,
    Settlement,
)
from streamfn.state.claims import Claim, ClaimState
from streamfn.types import InvocationResult, Outcome

__all__ = [
    "Begin",
    "Claimed",
    "EventPolicy",
    "Finished",
    "Leased",
    "Plan",
    "Run",
    "Settle",
    "decide",
]

IN_PROGRESS_RETRY = 1.0
"""Seconds before an event whose key is held elsewhere is looked at again."""


class EventPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What the lifecycle needs to know about one function (built by the engine)."""

    retry: AsyncRetryPolicy = AsyncRetryPolicy()
    timeout: float = 3.0
    function_arn: str = ""
    on_success: str | None = None
    on_failure: str | None = None
    reserved_concurrency: int | None = None
    lease_margin: float = 60.0
    """Seconds a claim and lease outlive the function's timeout."""


class Leased(msgspec.Struct, frozen=True):
    slot: bool
    """Whether a concurrency slot was granted for it."""


class Claimed(msgspec.Struct, frozen=True):
    claim: Claim


class Finished(msgspec.Struct, frozen=True):
    result: InvocationResult


Step = Leased | Claimed | Finished


class Begin(msgspec.Struct, frozen=True):
    """Look up the key, count the attempt and extend the lease to ``lease_until``."""

    lease_until: float


class Run(msgspec.Struct, frozen=True):
    """Invoke the function in the granted slot."""


class Settle(msgspec.Struct, frozen=True, kw_only=True):
    """Write ``settlement`` (fenced); count the event under ``outcome``; log ``message``."""

    settlement: Settlement
    outcome: str
    """succeeded | retried | throttled | duplicate | busy | dropped:<condition>"""
    message: str | None = None
    level: int = logging.INFO


Plan = Begin | Run | Settle


def decide(event: QueuedEvent, step: Step, *, now: float, policy: EventPolicy) -> Plan:
    """The plan for ``event`` at ``step`` (see the module docstring's table). ``event``
    carries the counts as stored: after a NEW claim, ``attempts`` and ``invoke_count``
    already include the attempt being made."""
    if isinstance(step, Leased):
        return _leased(event, step.slot, now, policy)
    if isinstance(step, Claimed):
        return _claimed(event, step.claim, now, policy)
    return _finished(event, step.result, now, policy)


def _leased(event: QueuedEvent, slot: bool, now: float, policy: EventPolicy) -> Plan:
    retry = policy.retry
    aged = retry.before_attempt(enqueued_at=event.enqueued_at, now=now)
    if aged is not None:
        return _discard(event, aged.condition, None, now, policy)
    if event.attempts > retry.maximum_retry_attempts:
        return _discard(event, "RetriesExhausted", None, now, policy)
    if not slot:
        decision = retry.after_attempt(
            Outcome.THROTTLED,
            attempts=event.attempts,
            throttles=event.throttles + 1,
            now=now,
            reserved_concurrency=policy.reserved_concurrency,
        )
        if isinstance(decision, Discard):
            return _discard(event, decision.condition, None, now, policy)
        assert isinstance(decision, Retry)
        requeue = _requeue(event, decision.at, throttles=event.throttles + 1)
        return Settle(settlement=Settlement(now=now, requeue=requeue), outcome="throttled")
    return Begin(lease_until=now + policy.timeout + policy.lease_margin)


def _claimed(event: QueuedEvent, claim: Claim, now: float, policy: EventPolicy) -> Plan:
    if claim.state is ClaimState.NEW:
        return Run()
    if claim.state is ClaimState.COMPLETED:
        return Settle(
            settlement=Settlement(now=now),
            outcome="duplicate",
            message=f"event {event.request_id} of {event.function} skipped: "
            "idempotency key already completed",
        )
    requeue = _requeue(event, now + IN_PROGRESS_RETRY)
    return Settle(settlement=Settlement(now=now, requeue=requeue), outcome="busy")


def _finished(
    event: QueuedEvent, result: InvocationResult, now: float, policy: EventPolicy
) -> Plan:
    if result.outcome is Outcome.SUCCESS:
        completion = Completion(result=result.payload, expires_at=now + event.idempotency_ttl)
        records, enqueue = _records(policy.on_success, event, "Success", result, now, policy)
        settlement = Settlement(now=now, complete=completion, records=records, enqueue=enqueue)
        return Settle(settlement=settlement, outcome="succeeded")
    started = result.report is not None and result.outcome is not Outcome.THROTTLED
    if not started:  # the handler never ran: this attempt does not count
        event = msgspec.structs.replace(
            event, attempts=max(0, event.attempts - 1), invoke_count=max(0, event.invoke_count - 1)
        )
    throttled = result.outcome is Outcome.THROTTLED
    throttles = event.throttles + 1 if throttled else event.throttles
    decision = policy.retry.after_attempt(
        result.outcome, attempts=event.attempts, throttles=throttles, now=now
    )
    if isinstance(decision, Deliver):  # pragma: no cover - only SUCCESS delivers
        raise AssertionError(decision)
    if isinstance(decision, Discard):
        return _discard(event, decision.condition, result, now, policy)
    settlement = Settlement(now=now, requeue=_requeue(event, decision.at, throttles=throttles))
    return Settle(
        settlement=settlement,
        outcome="throttled" if throttled else "retried",
        message=f"event {event.request_id} of {event.function}: {decision.reason}",
        level=logging.WARNING,
    )


def _requeue(event: QueuedEvent, at: float, *, throttles: int | None = None) -> Requeue:
    return Requeue(
        visible_at=at,
        attempts=event.attempts,
        invoke_count=event.invoke_count,
        throttles=event.throttles if throttles is None else throttles,
    )


def _discard(
    event: QueuedEvent,
    condition: str,
    result: InvocationResult | None,
    now: float,
    policy: EventPolicy,
) -> Settle:
    records, enqueue = _records(policy.on_failure, event, condition, result, now, policy)
    where = (
        f"; recorded in {policy.on_failure}"
        if policy.on_failure
        else "; no on_failure destination is configured"
    )
    return Settle(
        settlement=Settlement(now=now, records=records, enqueue=enqueue),
        outcome=f"dropped:{condition}",
        message=f"event {event.request_id} of {event.function} dropped: {condition} "
        f"after {event.invoke_count} invocation(s){where}",
        level=logging.ERROR,
    )


def _records(
    uri: str | None,
    event: QueuedEvent,
    condition: str,
    result: InvocationResult | None,
    now: float,
    policy: EventPolicy,
) -> tuple[tuple[OutboxRecord, ...], tuple[NewEvent, ...]]:
    """The destination record for ``uri``: queued for ``function:``, else the outbox."""
    if uri is None:
        return (), ()
    record = async_destination_record(
        request_id=event.request_id,
        function_arn=policy.function_arn,
        condition=condition,
        approximate_invoke_count=event.invoke_count,
        request_payload=event.payload,
        result=result,
        timestamp=now,
    )
    payload = msgspec.json.encode(record)
    destination = parse_destination(uri)
    if isinstance(destination, FunctionDestination):
        key = f"destination:{event.request_id}:{condition}"
        queued = NewEvent(
            function=destination.function,
            payload=payload,
            # Deterministic, so a plan stays a pure function of its inputs.
            request_id=str(uuid.uuid5(uuid.NAMESPACE_OID, key)),
            idempotency_key=key,
        )
        return (), (queued,)
    return (OutboxRecord(destination=uri, record=payload),), ()
