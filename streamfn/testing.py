"""The public test kit: a fake clock, an in-memory source context, a gated runtime,
connector conformance.

For connector authors::

    from streamfn.testing import FakeClock, check_event_source

    async def test_my_source_conforms(tmp_path):
        await check_event_source(lambda: MySource(config), produce=make_two_events,
                                 expected=2, root=tmp_path)

:func:`check_event_source` runs a source twice against an in-memory engine and checks what
every event source must do: its events are JSON, each has its own idempotency key, it
stops promptly when cancelled, and a restart from its checkpoints does not emit again what
it already emitted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from streamfn.clock import Clock, SystemClock
from streamfn.sources import EventSource, SourceContext
from streamfn.types import InvocationRequest, InvocationResult, Outcome, Report


class FakeClock:
    """A clock that moves only when told. ``sleep`` waits until :meth:`advance` passes
    the sleeper's deadline; ``time`` and ``monotonic`` move together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or math.isnan(seconds):
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        await wake.wait()

    def step(self, seconds: float) -> None:
        """Move time forward now, waking the sleepers whose deadline passes; unlike
        :meth:`advance` it does not wait for them to run (for synchronous test code)."""
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            heapq.heappop(self._sleepers)[2].set()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order, and
        letting the woken tasks run before time moves on."""
        target = self._elapsed + seconds
        await anyio.wait_all_tasks_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, deadline)
            wake.set()
            await anyio.wait_all_tasks_blocked()
        self._elapsed = target
        await anyio.wait_all_tasks_blocked()

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)


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


@dataclass
class MemoryEngine:
    """What a source sees of the engine, in memory: emitted events, checkpoints, and the
    order in which they happened."""

    events: list[tuple[object, str]] = field(default_factory=list)
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    journal: list[tuple[str, str]] = field(default_factory=list)

    def context(
        self,
        *,
        name: str = "test-source",
        function: str = "fn",
        root: Path,
        clock: Clock | None = None,
    ) -> SourceContext:
        queued: set[str] = set()

        async def emit(
            event: object, key: str, /, checkpoint: tuple[str, bytes] | None = None
        ) -> bool:
            msgspec.json.encode(event)  # raises if the event is not JSON
            self.journal.append(("emit", key))
            if checkpoint is not None:
                self.checkpoints[checkpoint[0]] = checkpoint[1]
            if key in queued:
                return False
            queued.add(key)
            self.events.append((event, key))
            return True

        async def get_checkpoints() -> Mapping[str, bytes]:
            return dict(self.checkpoints)

        async def put_checkpoint(key: str, value: bytes) -> None:
            self.journal.append(("checkpoint", key))
            self.checkpoints[key] = value

        async def setdefault_checkpoint(key: str, value: bytes) -> bytes:
            return self.checkpoints.setdefault(key, value)

        async def delete_checkpoint(key: str) -> None:
            self.checkpoints.pop(key, None)

        return SourceContext(
            name=name,
            function=function,
            root=root,
            region="local",
            account="000000000000",
            clock=clock or SystemClock(),
            log=logging.getLogger(f"streamfn.source.{name}"),
            emit=emit,
            get_checkpoints=get_checkpoints,
            put_checkpoint=put_checkpoint,
            setdefault_checkpoint=setdefault_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )


async def check_event_source(
    create: Callable[[], EventSource],
    *,
    produce: Callable[[], Awaitable[None]],
    expected: int,
    root: Path,
    clock: Clock | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
    limit: float = 20.0,
) -> MemoryEngine:
    """Run the conformance checks (see the module docstring); returns the engine of the
    first run for further assertions. ``produce`` makes the source have ``expected``
    events to emit; ``settle`` lets time pass on the second run (default: 0.5 s)."""
    engine = MemoryEngine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(create().run, engine.context(root=root, clock=clock))
        await produce()
        with anyio.fail_after(limit):
            while len(engine.events) < expected:  # noqa: ASYNC110 - observing from outside
                await anyio.sleep(0.01)
        cancelled_at = anyio.current_time()
        tg.cancel_scope.cancel()
    stopping = anyio.current_time() - cancelled_at
    assert stopping < 2.0, f"the source took {stopping:.1f}s to stop when cancelled"
    keys = [key for _, key in engine.events]
    assert len(keys) == len(set(keys)) == expected, f"expected {expected} distinct events: {keys}"
    assert all(keys), "every event has an idempotency key"

    emitted = set(keys)
    # Restart from the checkpoints: nothing already emitted and checkpointed comes again.
    again = MemoryEngine(checkpoints=dict(engine.checkpoints))
    async with anyio.create_task_group() as tg:
        tg.start_soon(create().run, again.context(root=root, clock=clock))
        if settle is not None:
            await settle()
        else:
            await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    repeated = [key for _, key in again.events if key in emitted]
    assert not repeated, f"emitted again after a restart: {repeated}"
    return engine
