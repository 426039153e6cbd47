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

The delays come from :func:`streamfn.backoff.exponential`, a plain function of the attempt
(or throttle) number, so the decision stays pure and survives a restart: the counts are
stored with the event, not held in a retry loop. The policy is built from the config by
the caller (the engine); this module does not read config.
"""

from __future__ import annotations

import msgspec

from streamfn.backoff import exponential
from streamfn.types import Outcome

THROTTLE_BASE = 1.0
THROTTLE_CAP = 300.0


class Deliver(msgspec.Struct, frozen=True):
    """The attempt succeeded: record success and remove the event."""


class Retry(msgspec.Struct, frozen=True):
    at: float
    counts_as_attempt: bool
    reason: str


class Discard(msgspec.Struct, frozen=True):
    condition: str  # RetriesExhausted | EventAgeExceeded | ZeroReservedConcurrency


Decision = Deliver | Retry | Discard


class AsyncRetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    maximum_retry_attempts: int = 2
    maximum_event_age: float = 21_600
    retry_delay: float = 60.0

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
            delay = exponential(max(1, throttles) - 1, base=THROTTLE_BASE, cap=THROTTLE_CAP)
            return Retry(now + delay, False, f"throttled; retrying in {delay:.0f}s")
        if attempts > self.maximum_retry_attempts:
            return Discard("RetriesExhausted")
        delay = exponential(attempts - 1, base=self.retry_delay, cap=float("inf"))
        retries_left = self.maximum_retry_attempts - attempts + 1
        return Retry(
            now + delay, True, f"{outcome.value}; retry in {delay:.1f}s ({retries_left} left)"
        )
