"""One batch of a stream mapping, run to its end: invoke, retry, bisect, discard.

Theory of operation. The driver (:mod:`streamfn.streams.driver`) cuts a batch from a lane and
hands it to :meth:`BatchRunner.run` in a task of its own; the lane stays in flight until
that task ends, so later records of the lane wait and per-key order holds. The runner keeps
the stack of :class:`~streamfn.streams.retry.RetryItem` that :mod:`streamfn.streams.retry`
describes and acts on each decision:

- records that succeeded are *finished* on the partition's offset tracker;
- a retry waits its backoff on the clock, a bisect pushes both halves (left first);
- a discard writes the failure record and then finishes the records, so the partition
  continues past them. A destination the source writes itself (Kafka's ``kafka://``) gets
  the records and the :class:`~streamfn.streams.contract.Failure`; any other is handed the
  format's failure record through the engine's destination writer.

The event, the reading of a partial response and the failure record come from the
connector's :class:`~streamfn.streams.contract.StreamFormat`: nothing here knows a wire
format.

Only this lane waits; other lanes and partitions keep flowing. A destination that cannot be
written is retried every ``destination_retry`` seconds: its records are not finished before
their failure record exists. When the partition is revoked (or the mapping stops) the
runner starts no new invocation and abandons its backoff: what is unfinished stays
uncommitted and is redelivered to the partition's next owner.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import msgspec

from streamfn.clock import Clock
from streamfn.errors import StreamfnError
from streamfn.invoke.destinations import (
    Destination,
    DestinationWriter,
    DirDestination,
    FunctionDestination,
)
from streamfn.streams.batching import Batch, Oversize
from streamfn.streams.contract import Failure, StreamDestination, StreamFormat
from streamfn.streams.offsets import PartitionOffsets
from streamfn.streams.retry import (
    Bisect,
    Commit,
    Discard,
    Partial,
    Retry,
    RetryItem,
    StreamRetryPolicy,
)
from streamfn.types import InvocationRequest, InvocationResult, StreamRecord

PAYLOAD_SIZE_EXCEEDED = "MaximumPayloadSizeExceeded"

InvokeFn = Callable[[InvocationRequest], Awaitable[InvocationResult]]


@dataclass
class Counters:
    """What a mapping has done so far (mutable; the driver publishes frozen snapshots)."""

    received: int = 0
    delivered: int = 0
    filtered: int = 0
    failed: int = 0  # records discarded, with or without a failure destination
    batches: int = 0  # invocations
    retries: int = 0  # counted against maximum_retry_attempts
    throttles: int = 0
    bisects: int = 0
    destination_errors: int = 0


async def wait_event(clock: Clock, event: anyio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds`` of ``clock``'s time; True if it was set."""
    if event.is_set():
        return True
    if seconds <= 0:
        return False
    fired = False
    async with anyio.create_task_group() as tg:

        async def expire() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(expire)
        await event.wait()
        fired = True
        tg.cancel_scope.cancel()
    return fired


class BatchRunner:
    """Runs batches of one mapping; shared by all its lanes (it holds no per-batch state)."""

    def __init__(
        self,
        *,
        function: str,
        function_arn: str,
        retry: StreamRetryPolicy,
        on_failure: Destination | None,
        format: StreamFormat,
        invoke: InvokeFn,
        destinations: DestinationWriter | None,
        sink: StreamDestination | None,
        clock: Clock,
        counters: Counters,
        log: logging.Logger,
        destination_retry: float = 5.0,
    ) -> None:
        self._function = function
        self._arn = function_arn
        self._retry = retry
        self._on_failure = on_failure
        self._invoke = invoke
        self._destinations = destinations
        self._format = format
        self._sink = sink  # the source writes on_failure itself
        self._clock = clock
        self._counters = counters
        self._log = log
        self._destination_retry = destination_retry

    async def run(self, batch: Batch, offsets: PartitionOffsets, revoked: anyio.Event) -> None:
        """Run ``batch`` until every record is finished, or until ``revoked`` is set.

        Raises a non-retriable StreamfnError of the failure destination; cancellation
        leaves the unfinished records unfinished (they are redelivered)."""
        stack = [RetryItem(records=batch.records)]
        where = f"{batch.tp} lane {batch.lane}"
        while stack:
            item = stack[-1]
            if revoked.is_set():
                return
            now_ms = self._now_ms()
            if (too_old := self._retry.check_age(item, now_ms)) is not None:
                expired, young = self._split_expired(too_old.item, now_ms)
                discard = msgspec.structs.replace(too_old, item=expired)
                if not await self._discard(discard, None, offsets, revoked, where):
                    return
                if young.records:
                    stack[-1] = young  # records within maximum_record_age are still invoked
                else:
                    stack.pop()
                continue
            result = await self._call(item.records)
            decision = self._retry.decide(
                item, result, self._now_ms(), parse=self._format.batch_item_failures
            )
            if isinstance(decision, Partial):
                self._finish(offsets, decision.finished)
                self._counters.delivered += len(decision.finished)
                decision = decision.then
            if isinstance(decision, Commit):
                self._finish(offsets, decision.records)
                self._counters.delivered += len(decision.records)
                stack.pop()
            elif isinstance(decision, Bisect):
                self._counters.bisects += 1
                self._log.warning("%s %s: %s", where, _span(item.records), decision.reason)
                stack[-1:] = [decision.right, decision.left]
            elif isinstance(decision, Retry):
                if decision.counted:
                    self._counters.retries += 1
                else:
                    self._counters.throttles += 1
                self._log.warning("%s %s: %s", where, _span(decision.item.records), decision.reason)
                stack[-1] = decision.item
                if await wait_event(self._clock, revoked, decision.delay_s):
                    return
            else:
                if not await self._discard(decision, result, offsets, revoked, where):
                    return
                stack.pop()

    async def run_oversize(
        self, oversize: Oversize, offsets: PartitionOffsets, revoked: anyio.Event
    ) -> None:
        """A record too large for any batch: straight to the failure destination."""
        record = oversize.record
        discard = Discard(
            item=RetryItem(records=(record,)),
            condition=PAYLOAD_SIZE_EXCEEDED,
            reason=f"its event would be {oversize.payload_bytes} bytes, over the payload limit",
        )
        await self._discard(discard, None, offsets, revoked, f"{record.topic}-{record.partition}")

    async def _call(self, records: Sequence[StreamRecord]) -> InvocationResult:
        request = InvocationRequest(
            function=self._function,
            payload=self._format.batch_event(records),
            request_id=str(uuid.uuid4()),
        )
        self._counters.batches += 1
        return await self._invoke(request)

    async def _discard(
        self,
        discard: Discard,
        result: InvocationResult | None,
        offsets: PartitionOffsets,
        revoked: anyio.Event,
        where: str,
    ) -> bool:
        """Record ``discard`` at the failure destination, then finish its records. False if
        the partition was revoked before the record could be written."""
        records = discard.item.records
        target = self._on_failure
        self._log.error(
            "%s %s: %s; %s",
            where,
            _span(records),
            discard.reason,
            f"recording them in {self._uri(target)}"
            if target is not None
            else "discarding them (no on_failure destination is configured)",
        )
        while target is not None:
            try:
                await self._write_failure(target, discard, result)
                break
            except StreamfnError as exc:
                if not exc.retriable:
                    raise
                self._counters.destination_errors += 1
                self._log.warning(
                    "%s: cannot write to %s (%s); trying again in %gs",
                    where,
                    self._uri(target),
                    exc,
                    self._destination_retry,
                )
                if await wait_event(self._clock, revoked, self._destination_retry):
                    return False
        self._finish(offsets, records)
        self._counters.failed += len(records)
        return True

    async def _write_failure(
        self, target: Destination, discard: Discard, result: InvocationResult | None
    ) -> None:
        records = discard.item.records
        failure = Failure(
            condition=discard.condition,
            request_id=result.request_id if result is not None else str(uuid.uuid4()),
            function_arn=self._arn,
            approximate_invoke_count=discard.item.invocations,
            result=result,
            now_ms=self._now_ms(),
        )
        if self._sink is not None:
            await self._sink.write(records, failure)
            return
        assert self._destinations is not None, "dir: and function: need a DestinationWriter"
        await self._destinations.deliver(target, self._format.failure_record(records, failure))

    def _split_expired(self, item: RetryItem, now_ms: int) -> tuple[RetryItem, RetryItem]:
        """``item``'s records past maximum_record_age (as ``check_age`` at ``now_ms`` found),
        and the others, each in their order."""
        oldest_ok = now_ms - self._retry.maximum_record_age_s * 1000
        expired = tuple(r for r in item.records if 0 <= r.timestamp_ms < oldest_ok)
        young = tuple(r for r in item.records if not 0 <= r.timestamp_ms < oldest_ok)
        return (
            msgspec.structs.replace(item, records=expired),
            msgspec.structs.replace(item, records=young),
        )

    @staticmethod
    def _finish(offsets: PartitionOffsets, records: Sequence[StreamRecord]) -> None:
        offsets.finish_many([record.offset for record in records])

    def _now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    def _uri(self, destination: Destination) -> str:
        if self._sink is not None:
            return self._sink.uri
        if isinstance(destination, DirDestination):
            return f"dir:{destination.path}"
        if isinstance(destination, FunctionDestination):
            qualifier = f":{destination.qualifier}" if destination.qualifier else ""
            return f"function:{destination.function}{qualifier}"
        return destination.scheme


def _span(records: Sequence[StreamRecord]) -> str:
    if len(records) == 1:
        return f"offset {records[0].offset}"
    return f"offsets {records[0].offset}..{records[-1].offset} ({len(records)} records)"

