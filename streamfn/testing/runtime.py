"""A runtime for tests of what sits above the runtime boundary."""

from __future__ import annotations

import anyio

from streamfn.types import InvocationRequest, InvocationResult, Outcome, Report

__all__ = ["GatedRuntime"]


class GatedRuntime:
    """A :class:`~streamfn.runtime.base.Runtime` for tests of what sits above the runtime
    boundary: every invocation waits until :attr:`gate` is set, then succeeds. ``running``,
    ``peak`` and ``done`` count what happened, to check concurrency limits."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = 0
        self.gate = anyio.Event()

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        self.done += 1
        report = Report(
            duration_ms=1, billed_duration_ms=1, memory_size_mb=128, max_memory_used_mb=1
        )
        return InvocationResult(
            request_id=request.request_id, outcome=Outcome.SUCCESS, payload=b"null", report=report
        )
