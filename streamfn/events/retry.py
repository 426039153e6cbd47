"""Retry decisions of the async invocation path (AWS's "event invoke config").

Theory of operation: an event in the async queue is attempted; after each attempt the
dispatcher asks :meth:`AsyncRetryPolicy.after_attempt` what to do, and before each attempt
:meth:`AsyncRetryPolicy.before_attempt` whether the event is still young enough to run.

- Function errors (exceptions, timeouts, crashes) are retried ``maximum_retry_attempts``
  times (0–2), the first retry ``retry_delay`` seconds later and each further one twice
  as late (AWS: 1 minute, then 2 minutes); then the event is discarded as
  ``RetriesExhausted``.
- Throttles are not attempts: the event goes back to the queue with a backoff growing from
  1 s to 5 minutes, for as long as it is younger than ``maximum_event_age``.
- An event older than ``maximum_event_age`` when its turn comes is discarded as
  ``EventAgeExceeded``.

The delays are tenacity's exponential wait strategies, evaluated here as plain functions
of the attempt number so the decision stays pure and survives a restart (the attempt
count is stored with the event, not held in a retry loop).
"""

from __future__ import annotations

import msgspec
import tenacity

from streamfn.config import AsyncConfig
from streamfn.types import Outcome

THROTTLE_BACKOFF = tenacity.wait_exponential(multiplier=1, min=1, max=300)


class Deliver(msgspec.Struct, frozen=True):
    """The attempt succeeded: record success and remove the event."""


class Retry(msgspec.Struct, frozen=True):
    at: float
    counts_as_attempt: bool
    reason: str


class Discard(msgspec.Struct, frozen=True):
    condition: str  # RetriesExhausted | EventAgeExceeded | ZeroReservedConcurrency


Decision = Deliver | Retry | Discard


def _wait(strategy: tenacity.wait.wait_base, attempt: int) -> float:
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(strategy(state))


class AsyncRetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    maximum_retry_attempts: int = 2
    maximum_event_age: float = 21_600
    retry_delay: float = 60.0

    @classmethod
    def from_config(cls, config: AsyncConfig) -> AsyncRetryPolicy:
        return cls(
            maximum_retry_attempts=config.maximum_retry_attempts,
            maximum_event_age=config.maximum_event_age,
            retry_delay=config.retry_delay,
        )

    def before_attempt(self, *, enqueued_at: float, now: float) -> Discard | None:
        if now - enqueued_at > self.maximum_event_age:
            return Discard("EventAgeExceeded")
        return None

    def after_attempt(
        self,
        outcome: Outcome,
        *,
        attempts: int,
        throttles: int,
        now: float,
        reserved_concurrency: int | None = None,
    ) -> Decision:
        """``attempts``: function-error attempts made so far, including this one when it
        failed; ``throttles``: throttled tries so far, including this one when throttled."""
        if outcome is Outcome.SUCCESS:
            return Deliver()
        if outcome is Outcome.THROTTLED:
            if reserved_concurrency == 0:
                return Discard("ZeroReservedConcurrency")
            delay = _wait(THROTTLE_BACKOFF, max(1, throttles))
            return Retry(now + delay, False, f"throttled; retrying in {delay:.0f}s")
        if attempts > self.maximum_retry_attempts:
            return Discard("RetriesExhausted")
        strategy = tenacity.wait_exponential(multiplier=self.retry_delay, exp_base=2)
        delay = _wait(strategy, attempts) if self.retry_delay > 0 else 0.0
        retries_left = self.maximum_retry_attempts - attempts + 1
        return Retry(
            now + delay, True, f"{outcome.value}; retry in {delay:.1f}s ({retries_left} left)"
        )
