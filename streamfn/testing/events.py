"""Event-source conformance: an in-memory engine and the checks every event source passes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec

from streamfn.clock import Clock, SystemClock
from streamfn.events.contract import EventSource, SourceContext

__all__ = ["MemoryEngine", "check_event_source"]


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
