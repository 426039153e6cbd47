"""The engine: wiring only.

``Engine.run()`` opens the state store and the runtime, then runs one task group holding
the async dispatcher and every event source. ``stop()`` (SIGINT / SIGTERM in the CLI)
stops intake first (sources are cancelled, the dispatcher leases nothing more), lets
in-flight invocations finish for up to ``drain_timeout`` seconds, then cancels the rest:
anything unfinished is still in the durable queue and runs after the next start.

Stream sources (connector kind ``"stream"``, e.g. Kafka) are not in the async path: each
runs as a :class:`~streamfn.streams.driver.StreamMapping` that invokes batches directly.
On stop, after the event sources are cancelled, every mapping stops fetching, lets its
in-flight batches finish (within ``drain_timeout``) and commits, before the async queue
drains; a mapping's failure records for ``function:`` destinations still reach the queue.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import anyio
import msgspec

from streamfn.clock import Clock, SystemClock
from streamfn.config import Config, SourceConfig
from streamfn.errors import SourceError
from streamfn.events.contract import Emit, EventSource, SourceContext
from streamfn.events.dispatcher import AsyncQueue
from streamfn.events.keys import key_from_path
from streamfn.filtering import compile_filters
from streamfn.invoke.destinations import DestinationWriter
from streamfn.invoke.invoker import Invoker
from streamfn.plugins import Registry
from streamfn.runtime.base import Runtime, function_arn
from streamfn.runtime.router import open_runtime
from streamfn.state import open_state_store
from streamfn.state.base import StateStore
from streamfn.streams.contract import StreamSource, StreamSourceConfig
from streamfn.streams.driver import StreamMapping, StreamMappingPolicy

log = logging.getLogger("streamfn.engine")

STREAM_CLOSE_GRACE = 15.0
"""Seconds beyond ``drain_timeout`` a stream mapping may take to commit and disconnect."""


@dataclass
class SourceStatistics:
    emitted: int = 0
    filtered: int = 0
    duplicates: int = 0


@dataclass
class Engine:
    config: Config
    registry: Registry
    clock: Clock = field(default_factory=SystemClock)
    sources: dict[str, SourceStatistics] = field(default_factory=dict)
    streams: dict[str, StreamMapping] = field(default_factory=dict)
    """Running stream mappings by name; ``statistics()`` of each gives its counters."""

    def __post_init__(self) -> None:
        self._stop = anyio.Event()
        self.failure: SourceError | None = None
        self.queue: AsyncQueue | None = None
        self.started = anyio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with self.open() as queue, anyio.create_task_group() as tg:
            await tg.start(queue.run)
            async with anyio.create_task_group() as streams:
                with anyio.CancelScope() as intake:
                    async with anyio.create_task_group() as sources:
                        for name, source in self._source_names().items():
                            if isinstance(source, StreamSourceConfig):
                                mapping = self._stream_mapping(name, source, queue)
                                streams.start_soon(self._run_stream, name, mapping)
                            else:
                                sources.start_soon(self._run_source, name, source, queue)
                        self.started.set()
                        log.info(
                            "streamfn is running: %d function(s), %d event source(s)",
                            len(self.config.functions),
                            len(self.config.event_sources),
                        )
                        await self._stop.wait()
                        intake.cancel()
                for mapping in self.streams.values():
                    mapping.stop()  # each drains its in-flight batches and commits
                streams.cancel_scope.deadline = (
                    anyio.current_time() + self.config.service.drain_timeout + STREAM_CLOSE_GRACE
                )
            log.info(
                "stopping: no new events taken; waiting up to %.0fs for %d in-flight invocation(s)",
                self.config.service.drain_timeout,
                queue.in_flight(),
            )
            queue.stop()
            with anyio.move_on_after(self.config.service.drain_timeout) as drain:
                await queue.drained()
            if drain.cancelled_caught:
                log.warning(
                    "drain timeout passed; unfinished events stay queued for the next start"
                )
            tg.cancel_scope.cancel()
        log.info("stopped")
        if self.failure is not None:
            raise self.failure

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncQueue]:
        """The state store, runtime, invoker and async queue, opened and wired."""
        async with (
            open_state_store(self.config) as store,
            open_runtime(self.config, clock=self.clock) as runtime,
        ):
            self.queue = self._wire(store, runtime)
            yield self.queue

    def _wire(self, store: StateStore, runtime: Runtime) -> AsyncQueue:
        return AsyncQueue(self.config, store, Invoker(self.config, runtime), self.clock)

    def _source_names(self) -> Mapping[str, SourceConfig]:
        names: dict[str, SourceConfig] = {}
        for source in self.config.event_sources:
            if not source.enabled:
                continue
            base = source.name or f"{source.function}-{source.type_name()}"
            name, n = base, 1
            while name in names:
                n += 1
                name = f"{base}-{n}"
            names[name] = source
        return names

    async def _run_source(self, name: str, config: SourceConfig, queue: AsyncQueue) -> None:
        connector = self.registry.connector(config.type_name())
        source = cast(EventSource, connector.create(config))  # its kind is "event"
        stats = self.sources.setdefault(name, SourceStatistics())
        matches = compile_filters(config.filters)
        store = queue.store
        emit = _emitter(name, queue, config, stats, matches)
        context = SourceContext(
            name=name,
            function=config.function,
            root=self.config.root,
            region=self.config.service.region,
            account=self.config.service.account,
            clock=self.clock,
            log=logging.getLogger(f"streamfn.source.{name}"),
            emit=emit,
            get_checkpoints=lambda: store.get_checkpoints(name),
            put_checkpoint=lambda key, value: store.put_checkpoint(name, key, value),
            setdefault_checkpoint=lambda key, value: store.setdefault_checkpoint(name, key, value),
            delete_checkpoint=lambda key: store.delete_checkpoint(name, key),
        )
        try:
            await source.run(context)
        except Exception as exc:
            # A source that cannot read stops the service, loudly; what it already emitted
            # is durable and drains as on any stop.
            self._failed(name, exc)

    def _stream_mapping(
        self, name: str, config: StreamSourceConfig, queue: AsyncQueue
    ) -> StreamMapping:
        connector = self.registry.connector(config.type_name())
        source = cast(StreamSource, connector.create(config))  # its kind is "stream"
        service = self.config.service
        mapping = StreamMapping(
            name=name,
            policy=StreamMappingPolicy.from_config(
                config,
                function_timeout=self.config.functions[config.function].timeout,
                drain_timeout=service.drain_timeout,
            ),
            source=source,
            invoke=queue.invoker.invoke,
            destinations=DestinationWriter(self.config.root, queue.enqueue),
            function_arn=function_arn(
                config.function, region=service.region, account=service.account
            ),
            clock=self.clock,
            log=logging.getLogger(f"streamfn.source.{name}"),
        )
        self.streams[name] = mapping
        return mapping

    async def _run_stream(self, name: str, mapping: StreamMapping) -> None:
        try:
            await mapping.run()
        except Exception as exc:
            # Offsets committed so far cover only finished records: nothing is lost.
            self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> None:
        self.failure = SourceError(f"event source {name} failed: {exc}")
        self.failure.__cause__ = exc
        log.error("%s", self.failure)
        self.stop()


def _emitter(
    name: str,
    queue: AsyncQueue,
    config: SourceConfig,
    stats: SourceStatistics,
    matches: Callable[[object], bool] | None,
) -> Emit:
    async def emit(
        event: object, default_key: str, /, checkpoint: tuple[str, bytes] | None = None
    ) -> bool:
        if matches is not None and not matches(event):
            stats.filtered += 1
            if checkpoint is not None:  # filtered out is finished: the source moves on
                await queue.store.put_checkpoint(name, *checkpoint)
            return False
        key = default_key
        if config.idempotency_key:
            derived = key_from_path(event, config.idempotency_key)
            if derived is None:
                log.warning(
                    "%s: idempotency_key path %r is missing in the event; using %r",
                    config.function,
                    config.idempotency_key,
                    default_key,
                )
            else:
                key = derived
        queued = await queue.enqueue(
            config.function,
            msgspec.json.encode(event),
            key,
            ttl=config.idempotency_ttl,
            checkpoint=None if checkpoint is None else (name, *checkpoint),
        )
        if queued:
            stats.emitted += 1
        else:
            stats.duplicates += 1
        return queued

    return emit
