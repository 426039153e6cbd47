"""The invoker: routes an invocation to the runtime within the concurrency limits.

Two limits apply to every invocation, as on AWS: the function's ``reserved_concurrency``
(when set) and the service's ``max_concurrency`` across all functions. How a caller meets
a full limit depends on who it is:

- :meth:`Invoker.invoke` with ``wait=True`` (stream batches): wait for a slot. The work
  stays where it is (the partition), so waiting costs no memory.
- ``wait=False`` (direct, synchronous invokes): do not wait; the result is THROTTLED, the
  caller's 429 TooManyRequestsException.
- :meth:`Invoker.try_acquire` then :meth:`Invoker.run` (the async dispatcher): take a slot
  without waiting *before* claiming the event, so no lease or claim runs while it waits;
  without a slot the event goes back to the queue with throttle backoff.

Throttled invocations never reach the runtime and never count as attempts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import anyio
import msgspec

from streamfn.runtime.base import Runtime
from streamfn.types import InvocationRequest, InvocationResult, Outcome

__all__ = ["Invoker", "InvokerPolicy", "Slot"]

THROTTLED_BODY = b'{"Type":"User","message":"Rate Exceeded.","Reason":"%s"}'
RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
SERVICE = "ConcurrentInvocationLimitExceeded"


class InvokerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The limits: ``max_concurrency`` across all functions, and ``reserved`` per function
    (0: always throttled; a function not named has no limit of its own)."""

    max_concurrency: int = 64
    reserved: Mapping[str, int] = {}


class Slot:
    """One granted unit of concurrency (the function's, if reserved, and the service's).
    :meth:`Invoker.run` releases it; :meth:`release` does so for a slot not used."""

    __slots__ = ("_limiters",)

    def __init__(self, limiters: tuple[anyio.CapacityLimiter, ...]) -> None:
        self._limiters = limiters  # each lent one token to this object

    def release(self) -> None:
        """Give the slot back; idempotent."""
        limiters, self._limiters = self._limiters, ()
        for limiter in limiters:
            limiter.release_on_behalf_of(self)


class Invoker:
    def __init__(self, policy: InvokerPolicy, runtime: Runtime) -> None:
        self._runtime = runtime
        self._service = anyio.CapacityLimiter(policy.max_concurrency)
        self._functions = {
            name: anyio.CapacityLimiter(limit)
            for name, limit in policy.reserved.items()
            if limit  # 0 is handled as "always throttled"
        }
        self._zero = {name for name, limit in policy.reserved.items() if limit == 0}

    async def invoke(self, request: InvocationRequest, *, wait: bool = True) -> InvocationResult:
        if request.function in self._zero:
            return throttled(request, RESERVED)
        try:
            async with self._slot(request.function, wait=wait):
                return await self._runtime.invoke(request)
        except anyio.WouldBlock as exc:
            return throttled(request, str(exc))

    def try_acquire(self, function: str) -> Slot | None:
        """A slot for one invocation of ``function`` now, or None when the function is at
        its reserved concurrency (or has 0) or the service at ``max_concurrency``. Never
        waits; the caller must :meth:`run` in the slot or release it."""
        if function in self._zero:
            return None
        limiter = self._functions.get(function)
        wanted = (self._service,) if limiter is None else (limiter, self._service)
        slot = Slot(())
        taken: list[anyio.CapacityLimiter] = []
        for current in wanted:
            try:
                # On behalf of the slot, not the task: one dispatcher task holds many.
                current.acquire_on_behalf_of_nowait(slot)
            except anyio.WouldBlock:
                for other in taken:
                    other.release_on_behalf_of(slot)
                return None
            taken.append(current)
        slot._limiters = tuple(taken)
        return slot

    async def run(self, slot: Slot, request: InvocationRequest) -> InvocationResult:
        """Invoke ``request`` in ``slot`` (from :meth:`try_acquire`), releasing it after."""
        try:
            return await self._runtime.invoke(request)
        finally:
            slot.release()

    @contextlib.asynccontextmanager
    async def _slot(self, function: str, *, wait: bool) -> AsyncIterator[None]:
        limiter = self._functions.get(function)
        async with contextlib.AsyncExitStack() as stack:
            for current, reason in ((limiter, RESERVED), (self._service, SERVICE)):
                if current is None:
                    continue
                try:
                    # No checkpoint when a slot is free: this is on every invocation's path.
                    current.acquire_nowait()
                except anyio.WouldBlock:
                    if not wait:
                        raise anyio.WouldBlock(reason) from None
                    await current.acquire()
                stack.callback(current.release)
            yield

    def in_flight(self) -> int:
        return int(self._service.borrowed_tokens)


def throttled(request: InvocationRequest, reason: str) -> InvocationResult:
    """The THROTTLED result for ``request`` (429 TooManyRequestsException)."""
    return InvocationResult(
        request_id=request.request_id,
        outcome=Outcome.THROTTLED,
        payload=THROTTLED_BODY % reason.encode(),
        executed_version=request.version,
        error_type="TooManyRequestsException",
    )
