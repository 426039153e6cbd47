"""An event-source mapping: the emit step between an event source and the async queue.

Theory of operation. The engine builds one :class:`EventMapping` per enabled event
source and runs the source with :meth:`EventMapping.context`. Each ``emit(event, key,
checkpoint=...)`` of the source goes: filters (an event no pattern matches is finished:
only its checkpoint is written) → idempotency key (the mapping's ``idempotency_key``
path into the event when set and present, else the source's default) → enqueue with the
checkpoint in one store transaction (:meth:`~streamfn.state.intake.Intake.enqueue`).
``emit`` returns once that transaction committed, so a source marks a file or tick as
taken only when its event is durable. It is the async twin of the stream path's
:class:`~streamfn.streams.driver.StreamMapping`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from streamfn.events.contract import EventSource, SourceContext
from streamfn.events.keys import key_from_path
from streamfn.services import Services

__all__ = ["EventMapping", "EventMappingPolicy", "EventMappingStatistics"]


class EventMappingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One ``[[event_sources]]`` entry's rules for the emit step (built by the engine)."""

    name: str
    """The mapping's stable id; its checkpoints are stored under it."""
    function: str
    root: str
    """The config file's directory (relative paths in a source's config start here)."""
    idempotency_key: str | None = None
    idempotency_ttl: float = 3600.0


class EventMappingStatistics(msgspec.Struct, frozen=True, kw_only=True):
    emitted: int = 0
    filtered: int = 0
    duplicates: int = 0


class EventMapping:
    """Filter → key → enqueue for one event source (see the module docstring)."""

    def __init__(
        self,
        policy: EventMappingPolicy,
        services: Services,
        *,
        matches: Callable[[object], bool] | None = None,
    ) -> None:
        self._policy = policy
        self._services = services
        self._matches = matches
        self._log = services.log_for(f"source.{policy.name}")
        self._emitted = 0
        self._filtered = 0
        self._duplicates = 0

    @property
    def name(self) -> str:
        return self._policy.name

    def statistics(self) -> EventMappingStatistics:
        return EventMappingStatistics(
            emitted=self._emitted, filtered=self._filtered, duplicates=self._duplicates
        )

    async def run(self, source: EventSource) -> None:
        """Run ``source`` until it returns; its errors propagate to the caller."""
        await source.run(self.context())

    def context(self) -> SourceContext:
        """The :class:`SourceContext` the source runs with."""
        name, services = self._policy.name, self._services
        store = services.store
        return SourceContext(
            name=name,
            function=self._policy.function,
            root=Path(self._policy.root),
            region=services.region,
            account=services.account,
            clock=services.clock,
            log=self._log,
            emit=self.emit,
            get_checkpoints=lambda: store.get_checkpoints(name),
            put_checkpoint=lambda key, value: store.put_checkpoint(name, key, value),
            setdefault_checkpoint=lambda key, value: store.setdefault_checkpoint(name, key, value),
            delete_checkpoint=lambda key: store.delete_checkpoint(name, key),
        )

    async def emit(
        self, event: object, default_key: str, /, checkpoint: tuple[str, bytes] | None = None
    ) -> bool:
        """The source's :class:`~streamfn.events.contract.Emit`. Raises StateError as the
        store does (nothing was written then)."""
        policy, services = self._policy, self._services
        if self._matches is not None and not self._matches(event):
            self._filtered += 1
            if checkpoint is not None:  # filtered out is finished: the source moves on
                await services.store.put_checkpoint(policy.name, *checkpoint)
            return False
        key = default_key
        if policy.idempotency_key:
            derived = key_from_path(event, policy.idempotency_key)
            if derived is None:
                self._log.warning(
                    "%s: idempotency_key path %r is missing in the event; using %r",
                    policy.function,
                    policy.idempotency_key,
                    default_key,
                )
            else:
                key = derived
        queued = await services.intake.enqueue(
            policy.function,
            msgspec.json.encode(event),
            key,
            ttl=policy.idempotency_ttl,
            checkpoint=None if checkpoint is None else (policy.name, *checkpoint),
        )
        if queued:
            self._emitted += 1
        else:
            self._duplicates += 1
        return queued
