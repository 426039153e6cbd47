"""Event-source conformance: an in-memory engine and the checks every event source passes.

:func:`check_event_source` runs a source four times against a :class:`MemoryEngine`:

1. from no checkpoints, until it has emitted the ``expected`` events: they are JSON, each
   has an idempotency key of its own, the source stops promptly when cancelled, and it
   never wrote a checkpoint while one of its ``emit`` calls had not returned (the journal);
2. from the checkpoints of run 1: nothing already emitted comes again;
3. from no checkpoints, with the first ``emit`` failing (as a state store outage would
   make it fail), then
4. from the checkpoints run 3 left: the event whose ``emit`` failed is emitted after all.
   A source that marked it taken before its ``emit`` returned loses it here.

Time. With a ``clock`` (a :class:`~streamfn.testing.FakeClock`) the checks never wait on
real time: ``produce`` and ``settle`` move the fake clock, and the kit waits only for every
task to block. Without one the source gets the system clock and the kit polls in real time.
``limit`` is a safety net against a source that hangs, in both cases, never the way to wait.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec

from streamfn.clock import Clock, SystemClock
from streamfn.errors import StateError
from streamfn.events.contract import EventSource, SourceContext

__all__ = ["MemoryEngine", "check_event_source"]


@dataclass
class MemoryEngine:
    """What a source sees of the engine, in memory: emitted events, checkpoints, and the
    order in which things happened (``journal``: ``("emit", key)`` when an emit is called,
    ``("emitted", key)`` when it returns, ``("checkpoint", key)`` for a put_checkpoint).

    ``fail_emits`` makes that many next ``emit`` calls raise StateError, queueing and
    checkpointing nothing; ``failed`` lists their idempotency keys."""

    events: list[tuple[object, str]] = field(default_factory=list)
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    journal: list[tuple[str, str]] = field(default_factory=list)
    fail_emits: int = 0
    failed: list[str] = field(default_factory=list)

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
            await anyio.lowlevel.checkpoint()  # an emit takes time: others may run meanwhile
            if self.fail_emits > 0:
                self.fail_emits -= 1
                self.failed.append(key)
                self.journal.append(("failed", key))
                raise StateError(f"emit of {key!r} failed (injected by the test)")
            if checkpoint is not None:
                self.checkpoints[checkpoint[0]] = checkpoint[1]
            self.journal.append(("emitted", key))
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

    def checkpoints_while_emitting(self) -> list[str]:
        """Checkpoints written while an ``emit`` had not yet returned (should be none)."""
        in_flight = 0
        early: list[str] = []
        for kind, key in self.journal:
            if kind == "emit":
                in_flight += 1
            elif kind in ("emitted", "failed"):
                in_flight -= 1
            elif kind == "checkpoint" and in_flight:
                early.append(key)
        return early


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
    events to emit; ``settle`` lets time pass on the restarts (default: with a ``clock``,
    until every task waits; without, 0.5 s). Raises AssertionError naming what failed."""
    wait = _Waiter(clock is not None, limit)

    async def settled() -> None:
        if settle is not None:
            await settle()
        else:
            await wait.settle()

    with anyio.fail_after(limit * 4):  # the safety net; each wait has its own
        # 1. A first run.
        engine = MemoryEngine()
        async with anyio.create_task_group() as tg:
            tg.start_soon(create().run, engine.context(root=root, clock=clock))
            await produce()
            came = await wait.until(lambda: len(engine.events) >= expected)
            cancelled_at = anyio.current_time()
            tg.cancel_scope.cancel()
        assert came, f"timed out waiting for {expected} events; got {len(engine.events)}"
        stopping = anyio.current_time() - cancelled_at  # read only; a fake clock stands still
        assert stopping < 2.0, f"the source took {stopping:.1f}s to stop when cancelled"
        keys = [key for _, key in engine.events]
        assert len(keys) == len(set(keys)) == expected, (
            f"expected {expected} distinct events: {keys}"
        )
        assert all(keys), "every event has an idempotency key"
        early = engine.checkpoints_while_emitting()
        assert not early, f"checkpoints written before an emit returned: {early}"

        # 2. Restart from the checkpoints: nothing already emitted and checkpointed comes again.
        emitted = set(keys)
        again = MemoryEngine(checkpoints=dict(engine.checkpoints))
        async with anyio.create_task_group() as tg:
            tg.start_soon(create().run, again.context(root=root, clock=clock))
            await settled()
            tg.cancel_scope.cancel()
        repeated = [key for _, key in again.events if key in emitted]
        assert not repeated, f"emitted again after a restart: {repeated}"

        # 3. A run whose first emit fails, and 4. a restart from what it left.
        failing = MemoryEngine(fail_emits=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_to_failure, create(), failing.context(root=root, clock=clock))
            came = await wait.until(lambda: bool(failing.failed))
            await settled()
            tg.cancel_scope.cancel()
        assert came, "timed out waiting for a first emit (made to fail)"
        lost = failing.failed[0]
        after = MemoryEngine(checkpoints=dict(failing.checkpoints))
        queued = {key for _, key in failing.events}
        async with anyio.create_task_group() as tg:
            tg.start_soon(create().run, after.context(root=root, clock=clock))
            came = await wait.until(
                lambda: lost in queued or any(key == lost for _, key in after.events)
            )
            tg.cancel_scope.cancel()
        assert came, (
            f"the event whose emit failed ({lost!r}) was not emitted again after a restart: "
            "the source checkpointed it before its emit returned"
        )
    return engine


async def _run_to_failure(source: EventSource, context: SourceContext) -> None:
    """Run ``source``; the injected emit failure may end it (so may anything else)."""
    with contextlib.suppress(Exception):  # an ending is allowed; run 4 checks the outcome
        await source.run(context)


class _Waiter:
    """Waits on a fake clock by letting every task block; on the system clock by polling."""

    def __init__(self, fake: bool, limit: float) -> None:
        self._fake = fake
        self._limit = limit

    async def until(self, condition: Callable[[], bool]) -> bool:
        """Whether ``condition`` came true (a fake clock: once every task waits)."""
        with anyio.move_on_after(self._limit):
            if self._fake:
                await anyio.wait_all_tasks_blocked()
            else:
                while not condition():  # noqa: ASYNC110 - observing from outside
                    await anyio.sleep(0.01)
        return condition()

    async def settle(self) -> None:
        if self._fake:
            await anyio.wait_all_tasks_blocked()
        else:
            await anyio.sleep(0.5)
