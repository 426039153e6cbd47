"""The async invocation path: durable queue → bounded workers → destinations.

Theory of operation. Sources and async invokes put events into the state store's queue
(:meth:`AsyncQueue.enqueue`). One fetcher task leases due events in small batches and
hands them, one at a time, to a fixed pool of ``max_concurrency`` worker tasks through a
zero-capacity stream: the fetcher only leases more when a worker is free, so a flood of
events waits on disk, never in memory. A worker runs one event to a decision:

    age check ─► idempotency claim ─► invoke ─► AsyncRetryPolicy decision
      │              │ completed: ack, skip      │ Deliver: on_success record, finish
      │              │ in progress: retry later  │ Retry:   release key, requeue at `at`
      ▼              ▼                           │ Discard: on_failure record, release, ack
    EventAgeExceeded: on_failure record, ack

``finish`` completes the idempotency key and acks the event in one transaction.
Every state change is one store transaction made after the work it records: a crash
anywhere leaves the event in the queue (its lease is reset when the store reopens), so it
is delivered again, and a key completed before the crash is not invoked again.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from streamfn.clock import Clock
from streamfn.config import Config
from streamfn.errors import StreamfnError
from streamfn.events.records import async_destination_record
from streamfn.events.retry import AsyncRetryPolicy, Deliver, Discard, Retry
from streamfn.invoke.destinations import DestinationWriter, parse_destination
from streamfn.invoke.invoker import Invoker
from streamfn.runtime.base import function_arn
from streamfn.state.base import ClaimState, QueuedEvent, StateStore
from streamfn.types import InvocationRequest, InvocationResult

log = logging.getLogger("streamfn.async")

DESTINATION_RETRY = 5.0  # seconds before an event whose destination failed is tried again
IN_PROGRESS_RETRY = 1.0  # seconds before an event whose key is held elsewhere is looked at again
LEASE_MARGIN = 60.0


@dataclass
class AsyncStatistics:
    received: int = 0
    duplicates: int = 0
    succeeded: int = 0
    retried: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    destination_failures: int = 0


class AsyncQueue:
    def __init__(self, config: Config, store: StateStore, invoker: Invoker, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._invoker = invoker
        self._clock = clock
        self._policies: Mapping[str, AsyncRetryPolicy] = {
            name: AsyncRetryPolicy.from_config(function.async_)
            for name, function in config.functions.items()
        }
        self._writer = DestinationWriter(config.root, self._enqueue_destination)
        self._wake = anyio.Event()
        self._lease_for = (
            max((f.timeout for f in config.functions.values()), default=3) + LEASE_MARGIN
        )
        self.statistics = AsyncStatistics()
        self._fetching = anyio.CancelScope()
        self._drained = anyio.Event()
        self._busy = 0

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def invoker(self) -> Invoker:
        return self._invoker

    def in_flight(self) -> int:
        """Events a worker is processing right now."""
        return self._busy

    async def drained(self) -> None:
        """Wait until :meth:`run` has returned after :meth:`stop`."""
        await self._drained.wait()

    async def enqueue(
        self,
        function: str,
        payload: bytes,
        idempotency_key: str,
        *,
        ttl: float = 3600.0,
        request_id: str | None = None,
        checkpoint: tuple[str, str, bytes] | None = None,
    ) -> bool:
        """Queue one event durably; returns False when its key is already queued.
        ``checkpoint`` (source, key, value) is committed with it (see StateStore.enqueue)."""
        queued = await self._store.enqueue(
            function=function,
            payload=payload,
            request_id=request_id or str(uuid.uuid4()),
            idempotency_key=idempotency_key,
            idempotency_ttl=ttl,
            now=self._clock.time(),
            checkpoint=checkpoint,
        )
        if queued:
            self.statistics.received += 1
            self._wake.set()
        return queued

    async def _enqueue_destination(self, function: str, payload: bytes, key: str) -> bool:
        return await self.enqueue(function, payload, key)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fetch and dispatch until :meth:`stop`; then let the workers finish the events they
        hold and return."""
        workers = self._config.service.max_concurrency
        send, receive = anyio.create_memory_object_stream[QueuedEvent](0)
        async with anyio.create_task_group() as tg:
            async with receive:
                for _ in range(workers):
                    tg.start_soon(self._worker, receive.clone())
            task_status.started()
            async with send:
                with self._fetching:
                    await self._fetch(send, batch=min(workers, 32))
        self._drained.set()

    def stop(self) -> None:
        """Stop leasing events; those already handed to workers run to their end."""
        self._fetching.cancel()

    async def _fetch(self, send: MemoryObjectSendStream[QueuedEvent], *, batch: int) -> None:
        while True:
            self._wake = anyio.Event()
            events = await self._store.lease(
                now=self._clock.time(), limit=batch, lease_for=self._lease_for
            )
            for event in events:
                await send.send(event)
            if len(events) == batch:
                continue
            due = await self._store.next_due()
            delay = 3600.0 if due is None else due - self._clock.time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()

    async def _worker(self, receive: MemoryObjectReceiveStream[QueuedEvent]) -> None:
        async with receive:
            async for event in receive:
                self._busy += 1
                try:
                    await self._process(event)
                finally:
                    self._busy -= 1

    async def _process(self, event: QueuedEvent) -> None:
        try:
            await self._attempt(event)
        except StreamfnError as exc:
            if not exc.retriable:
                raise
            # The event stays leased; it is tried again when the lease expires, or sooner:
            log.warning("event %s of %s will be retried: %s", event.request_id, event.function, exc)
            self.statistics.destination_failures += 1
            with contextlib.suppress(StreamfnError):  # else its lease runs out and it is due again
                await self._requeue(
                    event.id,
                    visible_at=self._clock.time() + DESTINATION_RETRY,
                    attempts=event.attempts,
                    invoke_count=event.invoke_count,
                )

    async def _attempt(self, event: QueuedEvent) -> None:
        policy = self._policies[event.function]
        function = self._config.functions[event.function]
        now = self._clock.time()
        if (discard := policy.before_attempt(enqueued_at=event.enqueued_at, now=now)) is not None:
            await self._discard(event, discard, None)
            return
        claim = await self._store.claim(
            function=event.function,
            key=event.idempotency_key,
            now=now,
            lease_until=now + function.timeout + LEASE_MARGIN,
        )
        if claim.state is ClaimState.COMPLETED:
            self.statistics.duplicates += 1
            log.info(
                "event %s of %s skipped: idempotency key already completed",
                event.request_id,
                event.function,
            )
            await self._store.ack(event.id)
            return
        if claim.state is ClaimState.IN_PROGRESS:
            await self._requeue(
                event.id,
                visible_at=now + IN_PROGRESS_RETRY,
                attempts=event.attempts,
                invoke_count=event.invoke_count,
            )
            return
        request = InvocationRequest(
            function=event.function, payload=event.payload, request_id=event.request_id
        )
        result = await self._invoker.invoke(request, wait=True)
        ran = result.report is not None
        attempts = event.attempts + (0 if result.ok or not ran else 1)
        invoke_count = event.invoke_count + (1 if ran else 0)
        decision = policy.after_attempt(
            result.outcome,
            attempts=attempts,
            throttles=1,
            now=self._clock.time(),
            reserved_concurrency=function.reserved_concurrency,
        )
        event = msgspec.structs.replace(event, attempts=attempts, invoke_count=invoke_count)
        if isinstance(decision, Deliver):
            if function.async_.on_success:
                await self._deliver(function.async_.on_success, event, "Success", result)
            self.statistics.succeeded += 1
            await self._store.finish(
                event.id,
                function=event.function,
                key=event.idempotency_key,
                result=result.payload,
                expires_at=self._clock.time() + event.idempotency_ttl,
            )
        elif isinstance(decision, Retry):
            self.statistics.retried += 1
            log.warning("event %s of %s: %s", event.request_id, event.function, decision.reason)
            await self._store.release(function=event.function, key=event.idempotency_key)
            await self._requeue(
                event.id, visible_at=decision.at, attempts=attempts, invoke_count=invoke_count
            )
        else:
            await self._discard(event, decision, result)
            await self._store.release(function=event.function, key=event.idempotency_key)

    async def _requeue(
        self, event_id: int, *, visible_at: float, attempts: int, invoke_count: int
    ) -> None:
        await self._store.retry_at(
            event_id, visible_at=visible_at, attempts=attempts, invoke_count=invoke_count
        )
        self._wake.set()  # the fetcher may be asleep until a later due time

    async def _discard(
        self, event: QueuedEvent, decision: Discard, result: InvocationResult | None
    ) -> None:
        function = self._config.functions[event.function]
        log.error(
            "event %s of %s dropped: %s after %d invocation(s)%s",
            event.request_id,
            event.function,
            decision.condition,
            event.invoke_count,
            f"; recorded in {function.async_.on_failure}"
            if function.async_.on_failure
            else "; no on_failure destination is configured",
        )
        if function.async_.on_failure:
            await self._deliver(function.async_.on_failure, event, decision.condition, result)
        dropped = self.statistics.dropped
        dropped[decision.condition] = dropped.get(decision.condition, 0) + 1
        await self._store.ack(event.id)

    async def _deliver(
        self, uri: str, event: QueuedEvent, condition: str, result: InvocationResult | None
    ) -> None:
        service = self._config.service
        record = async_destination_record(
            request_id=event.request_id,
            function_arn=function_arn(
                event.function, region=service.region, account=service.account, qualifier="$LATEST"
            ),
            condition=condition,
            approximate_invoke_count=event.invoke_count,
            request_payload=event.payload,
            result=result,
            timestamp=self._clock.time(),
        )
        await self._writer.deliver(parse_destination(uri), record)
