"""The invoker: routes an invocation to the runtime within the concurrency limits.

Two limits apply to every invocation, as on AWS: the function's ``reserved_concurrency``
(when set) and the service's ``max_concurrency`` across all functions. How a caller meets
a full limit depends on who it is:

- ``wait=True`` (async events, stream batches): wait for a slot. The work stays where it
  is (the durable queue, the partition), so waiting costs no memory.
- ``wait=False`` (direct, synchronous invokes): do not wait; the result is THROTTLED, the
  caller's 429 TooManyRequestsException.

Throttled invocations never reach the runtime and never count as attempts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio

from streamfn.config import Config
from streamfn.runtime.base import Runtime
from streamfn.types import InvocationRequest, InvocationResult, Outcome

THROTTLED_BODY = b'{"Type":"User","message":"Rate Exceeded.","Reason":"%s"}'


class Invoker:
    def __init__(self, config: Config, runtime: Runtime) -> None:
        self._runtime = runtime
        self._service = anyio.CapacityLimiter(config.service.max_concurrency)
        self._functions = {
            name: anyio.CapacityLimiter(function.reserved_concurrency)
            for name, function in config.functions.items()
            if function.reserved_concurrency  # 0 is handled as "always throttled"
        }
        self._zero = {n for n, f in config.functions.items() if f.reserved_concurrency == 0}

    async def invoke(self, request: InvocationRequest, *, wait: bool = True) -> InvocationResult:
        if request.function in self._zero:
            return _throttled(request, "ReservedFunctionConcurrentInvocationLimitExceeded")
        try:
            async with self._slot(request.function, wait=wait):
                return await self._runtime.invoke(request)
        except anyio.WouldBlock as exc:
            return _throttled(request, str(exc))

    @contextlib.asynccontextmanager
    async def _slot(self, function: str, *, wait: bool) -> AsyncIterator[None]:
        limiter = self._functions.get(function)
        async with contextlib.AsyncExitStack() as stack:
            for current, reason in (
                (limiter, "ReservedFunctionConcurrentInvocationLimitExceeded"),
                (self._service, "ConcurrentInvocationLimitExceeded"),
            ):
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


def _throttled(request: InvocationRequest, reason: str) -> InvocationResult:
    return InvocationResult(
        request_id=request.request_id,
        outcome=Outcome.THROTTLED,
        payload=THROTTLED_BODY % reason.encode(),
        executed_version=request.version,
        error_type="TooManyRequestsException",
    )
