"""What to do after a stream batch was invoked: commit, retry, bisect, or discard.

Theory of operation. A batch cut by the batch builder becomes a :class:`RetryItem`: its
records plus the counts that retry decisions need. The lane worker keeps a stack of items
(the batch's lane stays in flight the whole time, so later records of the lane wait and
order holds) and, for the item on top:

1. ``check_age(item, now_ms)``: a :class:`Discard` if the records are already too old to
   invoke (``RecordAgeExceeded``, never invoked this time);
2. invokes the function with the item's records and calls ``decide(item, result, now_ms)``;
3. acts on the decision:

   - :class:`Commit`: finish the records' offsets; pop the item.
   - :class:`Retry`: after ``delay_s``, replace the item with ``decision.item``.
   - :class:`Bisect`: replace the item with ``right`` then ``left`` (left is invoked first
     and fully resolved before right starts).
   - :class:`Partial`: finish ``finished``, then act on ``then`` (a Retry or a Discard of
     the records from the lowest failed offset on).
   - :class:`Discard`: write a failure record with ``condition`` and
     ``item.invocations`` as ``approximateInvokeCount``; finish the records' offsets.

When the stack is empty the worker calls ``BatchBuilder.done(batch)``.

Counting. ``RetryItem.retries`` counts retries charged against ``maximum_retry_attempts``
(a function error, timeout, crash or malformed partial response charges one; a record set
whose count reached the maximum is discarded at its next failure). Throttles are not
charged: they grow ``throttles``, which only paces their own backoff, and are retried
until the records exceed ``maximum_record_age_s``. Bisect halves and the remainder of a
partial response inherit the counts of the item they came from, so splitting never resets
or charges retries. ``invocations`` counts the times these records reached the function,
ancestors included. Delays are :func:`streamfn.backoff.exponential` (``min(backoff_cap_s,
backoff_base_s * 2**n)``) for the n-th retry (or throttle), without jitter: each partition
retries alone.

Partial batch responses are read by the stream's format (``parse``, passed to ``decide``):
this module knows no wire format.

Record age is ``now_ms`` minus the oldest record timestamp of the item (records without a
timestamp, -1, do not count). A failed item that is too old is discarded at once rather
than retried or bisected. With ``maximum_retry_attempts`` -1 and ``maximum_record_age_s``
-1 (AWS's defaults) a failing record blocks its lane until it succeeds.

AWS also caps infinite retries at 10 when an on-failure destination is configured; set
``has_on_failure_destination`` to get that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgspec

from streamfn.backoff import exponential
from streamfn.errors import ConfigError
from streamfn.types import InvocationResult, Outcome, StreamRecord, TopicPartition

PartialResponseParser = Callable[[bytes, Sequence[StreamRecord]], Mapping[TopicPartition, int]]
"""The format's reading of a partial batch response
(:meth:`~streamfn.streams.contract.StreamFormat.batch_item_failures`)."""

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


class RetryItem(msgspec.Struct, frozen=True, kw_only=True):
    """Records to invoke together, with what earlier tries of them cost."""

    records: tuple[StreamRecord, ...]
    retries: int = 0  # retries charged against maximum_retry_attempts
    invocations: int = 0  # times these records reached the function
    throttles: int = 0  # throttled tries since the function last ran


class Commit(msgspec.Struct, frozen=True, kw_only=True):
    records: tuple[StreamRecord, ...]


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    item: RetryItem  # the counts already updated: invoke this next
    delay_s: float
    counted: bool  # charged against maximum_retry_attempts (False for throttles)
    reason: str


class Bisect(msgspec.Struct, frozen=True, kw_only=True):
    left: RetryItem
    right: RetryItem
    reason: str


class Discard(msgspec.Struct, frozen=True, kw_only=True):
    item: RetryItem
    condition: str  # RetryAttemptsExhausted | RecordAgeExceeded
    reason: str


class Partial(msgspec.Struct, frozen=True, kw_only=True):
    finished: tuple[StreamRecord, ...]  # before the lowest failed offset of each partition
    then: Retry | Discard  # for the records from the lowest failed offset on


Decision = Commit | Retry | Bisect | Discard | Partial


class StreamRetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Error handling of a stream mapping. Defaults are AWS's."""

    maximum_retry_attempts: int = -1  # -1 (infinite) or 0..10000
    maximum_record_age_s: int = -1  # -1 (infinite) or 60..604800
    bisect_on_error: bool = False
    report_batch_item_failures: bool = False
    has_on_failure_destination: bool = False  # caps infinite retries at 10, as AWS does
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0

    def __post_init__(self) -> None:
        if not -1 <= self.maximum_retry_attempts <= 10_000:
            raise ConfigError(
                f"must be -1 or 0..10000 (got {self.maximum_retry_attempts})",
                path="maximum_retry_attempts",
            )
        age = self.maximum_record_age_s
        if age != -1 and not 60 <= age <= 604_800:
            raise ConfigError(f"must be -1 or 60..604800 (got {age})", path="maximum_record_age_s")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ConfigError("must be > 0 and <= backoff_cap_s", path="backoff_base_s")

    @property
    def retry_limit(self) -> int | None:
        """Retries allowed per record set; None for no limit."""
        if self.maximum_retry_attempts == -1:
            return 10 if self.has_on_failure_destination else None
        return self.maximum_retry_attempts

    def check_age(self, item: RetryItem, now_ms: int) -> Discard | None:
        """Before each invocation: a Discard if the records are too old to invoke."""
        if self._too_old(item, now_ms):
            return Discard(
                item=item,
                condition=RECORD_AGE_EXCEEDED,
                reason=f"records older than maximum_record_age ({self.maximum_record_age_s}s)",
            )
        return None

    def decide(
        self,
        item: RetryItem,
        result: InvocationResult,
        now_ms: int,
        *,
        parse: PartialResponseParser | None = None,
    ) -> Decision:
        """After invoking ``item``'s records with ``result``: what the lane worker does next.

        ``parse`` reads a successful result's partial batch response; it is required when
        ``report_batch_item_failures`` is on (the stream's format provides it)."""
        if result.outcome is Outcome.THROTTLED:
            if (discard := self.check_age(item, now_ms)) is not None:
                return discard
            return Retry(
                item=msgspec.structs.replace(item, throttles=item.throttles + 1),
                delay_s=self._backoff(item.throttles),
                counted=False,
                reason="throttled; retrying (not counted as a retry attempt)",
            )
        ran = msgspec.structs.replace(item, invocations=item.invocations + 1, throttles=0)
        if result.outcome is Outcome.SUCCESS:
            if not self.report_batch_item_failures:
                return Commit(records=item.records)
            if parse is None:
                raise TypeError("report_batch_item_failures needs the format's parser")
            try:
                lowest = dict(parse(result.payload, item.records))
            except ValueError as exc:
                return self._function_error(ran, now_ms, f"invalid partial batch response: {exc}")
            if not lowest:
                return Commit(records=item.records)
            return self._partial(ran, lowest, now_ms)
        cause = f"function error ({result.outcome.value}"
        cause += f": {result.error_type})" if result.error_type else ")"
        return self._function_error(ran, now_ms, cause)

    def _function_error(self, item: RetryItem, now_ms: int, cause: str) -> Decision:
        records = item.records
        if self.bisect_on_error and len(records) > 1 and not self._too_old(item, now_ms):
            middle = len(records) // 2
            return Bisect(
                left=msgspec.structs.replace(item, records=records[:middle]),
                right=msgspec.structs.replace(item, records=records[middle:]),
                reason=f"{cause}; bisecting {len(records)} records (not counted as a retry)",
            )
        return self._retry_or_discard(item, now_ms, cause)

    def _partial(self, item: RetryItem, lowest: dict[TopicPartition, int], now_ms: int) -> Decision:
        finished, failed = [], []
        for record in item.records:
            first_failed = lowest.get(TopicPartition(record.topic, record.partition))
            if first_failed is None or record.offset < first_failed:
                finished.append(record)
            else:
                failed.append(record)
        where = ", ".join(f"{tp} from offset {offset}" for tp, offset in sorted(lowest.items()))
        rest = msgspec.structs.replace(item, records=tuple(failed))
        then = self._retry_or_discard(rest, now_ms, f"partial batch failure ({where})")
        if not finished:
            return then
        return Partial(finished=tuple(finished), then=then)

    def _retry_or_discard(self, item: RetryItem, now_ms: int, cause: str) -> Retry | Discard:
        if (discard := self.check_age(item, now_ms)) is not None:
            return msgspec.structs.replace(discard, reason=f"{cause}; {discard.reason}")
        limit = self.retry_limit
        if limit is not None and item.retries >= limit:
            return Discard(
                item=item,
                condition=RETRY_ATTEMPTS_EXHAUSTED,
                reason=f"{cause}; {limit} retry attempts exhausted",
            )
        delay = self._backoff(item.retries)
        of = "unlimited" if limit is None else limit
        reason = f"{cause}; retry {item.retries + 1} of {of} in {delay:g}s"
        if limit is None:
            reason += ", retrying until the records exceed maximum_record_age"
            if self.maximum_record_age_s == -1:
                reason += " (unlimited: the lane waits until the function succeeds)"
        return Retry(
            item=msgspec.structs.replace(item, retries=item.retries + 1),
            delay_s=delay,
            counted=True,
            reason=reason,
        )

    def _backoff(self, n: int) -> float:
        return exponential(n, base=self.backoff_base_s, cap=self.backoff_cap_s)

    def _too_old(self, item: RetryItem, now_ms: int) -> bool:
        if self.maximum_record_age_s == -1:
            return False
        stamps = [r.timestamp_ms for r in item.records if r.timestamp_ms >= 0]
        return bool(stamps) and now_ms - min(stamps) > self.maximum_record_age_s * 1000
