"""The engine: wiring only.

``Engine.run()`` opens the state store and the runtime, then runs one task group holding
the async dispatcher and every event source. ``stop()`` (SIGINT / SIGTERM in the CLI)
stops intake first (sources are cancelled, the dispatcher leases nothing more), lets
in-flight invocations finish for up to ``drain_timeout`` seconds, then cancels the rest:
anything unfinished is still in the durable queue and runs after the next start.

Stream sources (connector kind ``"stream"``, e.g. Kafka) are not in the async path: each
runs as a :class:`~streamfn.streams.driver.StreamMapping` that invokes batches directly.
On stop, after the event sources are cancelled, the dispatcher stops leasing and every
mapping stops fetching; both let what is in flight finish within the same
``drain_timeout`` (a mapping then commits). A mapping's failure records for ``function:``
destinations still reach the durable queue, and run after the next start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import anyio

from streamfn.clock import Clock, SystemClock, wait_for_change
from streamfn.config import Config, SourceConfig
from streamfn.errors import StreamfnError, stopped_by
from streamfn.events.contract import EventSource
from streamfn.events.dispatcher import Dispatcher
from streamfn.events.mapping import EventMapping
from streamfn.filtering import compile_filters
from streamfn.invoke.destinations import DestinationWriter
from streamfn.invoke.invoker import Invoker
from streamfn.plugins import Registry
from streamfn.policies import (
    dispatch_policy,
    event_mapping_policy,
    invoker_policy,
    runtime_policy,
)
from streamfn.runtime.base import Runtime, function_arn
from streamfn.runtime.router import open_runtime
from streamfn.services import Services
from streamfn.state import open_state_store
from streamfn.state.base import StateStore
from streamfn.state.intake import Intake
from streamfn.streams.contract import StreamSource, StreamSourceConfig
from streamfn.streams.driver import StreamMapping, StreamMappingPolicy

log = logging.getLogger("streamfn.engine")

STREAM_CLOSE_GRACE = 15.0
"""Seconds beyond ``drain_timeout`` a stream mapping may take to commit and disconnect."""


@dataclass
class Engine:
    config: Config
    registry: Registry
    clock: Clock = field(default_factory=SystemClock)
    sources: dict[str, EventMapping] = field(default_factory=dict)
    """Running event mappings by name; ``statistics()`` of each gives its counters."""
    streams: dict[str, StreamMapping] = field(default_factory=dict)
    """Running stream mappings by name; ``statistics()`` of each gives its counters."""
    strict: bool = True
    """A handler that cannot be imported stops the start (HandlerImportError); when False
    it is logged once and only that function's invocations fail (``streamfn run``)."""

    def __post_init__(self) -> None:
        self._stop = anyio.Event()
        self.failure: StreamfnError | None = None
        self.services: Services | None = None
        self.dispatcher: Dispatcher | None = None
        self.started = anyio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`stop`. Raises the StreamfnError that stopped the engine; any other
        error (exception groups unwrapped) is logged once with its traceback and raised as
        a one-line :class:`~streamfn.errors.EngineError`."""
        try:
            await self._run()
        except Exception as exc:
            error = stopped_by(exc, log)
            raise error from error.__cause__

    async def _run(self) -> None:
        async with self.open() as services, anyio.create_task_group() as tg:
            queue = self.dispatcher = Dispatcher(dispatch_policy(self.config), services)
            await tg.start(queue.run)
            async with anyio.create_task_group() as streams:
                with anyio.CancelScope() as intake:
                    async with anyio.create_task_group() as sources:
                        for name, source in self.config.enabled_sources().items():
                            if isinstance(source, StreamSourceConfig):
                                mapping = self._stream_mapping(name, source, services)
                                streams.start_soon(self._run_stream, name, mapping)
                            else:
                                sources.start_soon(self._run_source, name, source, services)
                        self.started.set()
                        log.info(
                            "streamfn is running: %d function(s), %d event source(s)",
                            len(self.config.functions),
                            len(self.config.event_sources),
                        )
                        await self._stop.wait()
                        intake.cancel()
                # The dispatcher leases nothing more and drains while the stream mappings
                # do: one drain_timeout for both (review C11).
                log.info(
                    "stopping: no new events taken; waiting up to %.0fs for %d in-flight"
                    " async invocation(s)",
                    self.config.service.drain_timeout,
                    queue.in_flight(),
                )
                queue.stop()
                drain_ends = self.clock.monotonic() + self.config.service.drain_timeout
                for mapping in self.streams.values():
                    mapping.stop()  # each drains its in-flight batches and commits
                streams.cancel_scope.deadline = (
                    anyio.current_time() + self.config.service.drain_timeout + STREAM_CLOSE_GRACE
                )
            drained = anyio.Event()
            tg.start_soon(_set_when, queue.drained, drained)
            await wait_for_change(drained, drain_ends - self.clock.monotonic(), self.clock)
            if not drained.is_set():
                log.warning(
                    "drain timeout passed; unfinished events stay queued for the next start"
                )
            tg.cancel_scope.cancel()
        log.info("stopped")
        if self.failure is not None:
            raise self.failure

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Services]:
        """The state store and runtime, opened, and the services both paths are given."""
        async with (
            open_state_store(self.config, clock=self.clock) as store,
            open_runtime(
                runtime_policy(self.config), clock=self.clock, strict=self.strict
            ) as runtime,
        ):
            self.services = self._wire(store, runtime)
            yield self.services

    def _wire(self, store: StateStore, runtime: Runtime) -> Services:
        intake = Intake(store, self.clock)
        return Services(
            clock=self.clock,
            store=store,
            invoker=Invoker(invoker_policy(self.config), runtime),
            intake=intake,
            destinations=DestinationWriter(self.config.root, intake.destination),
            log_for=lambda part: logging.getLogger(f"streamfn.{part}"),
            region=self.config.service.region,
            account=self.config.service.account,
        )

    async def _run_source(self, name: str, config: SourceConfig, services: Services) -> None:
        connector = self.registry.connector(config.type_name())
        source = cast(EventSource, connector.create(config))  # its kind is "event"
        mapping = EventMapping(
            event_mapping_policy(name, config, self.config),
            services,
            matches=compile_filters(config.filters),
        )
        self.sources[name] = mapping
        try:
            await mapping.run(source)
        except Exception as exc:
            # A source that cannot read stops the service, loudly; what it already emitted
            # is durable and drains as on any stop.
            self._failed(name, exc)

    def _stream_mapping(
        self, name: str, config: StreamSourceConfig, services: Services
    ) -> StreamMapping:
        connector = self.registry.connector(config.type_name())
        source = cast(StreamSource, connector.create(config))  # its kind is "stream"
        assert connector.format is not None  # the registry checked it when loading the plugin
        service = self.config.service
        mapping = StreamMapping(
            name=name,
            policy=StreamMappingPolicy.from_config(
                config,
                function_timeout=self.config.functions[config.function].timeout,
                drain_timeout=service.drain_timeout,
            ),
            source=source,
            format=connector.format(config),
            invoke=services.invoker.invoke,
            destinations=services.destinations,
            function_arn=function_arn(
                config.function, region=services.region, account=services.account
            ),
            clock=services.clock,
            log=services.log_for(f"source.{name}"),
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
        self.failure = stopped_by(exc, log, f"event source {name} failed")
        self.stop()


async def _set_when(done: Callable[[], Awaitable[None]], event: anyio.Event) -> None:
    await done()
    event.set()
