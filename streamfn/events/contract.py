"""The contract between the engine and an event source (the async path's connectors).

Event sources
-------------
An event source produces discrete events, as S3 notifications and schedules do on AWS, and
hands each to :meth:`SourceContext.emit`, together with the checkpoint that marks the file
or tick as taken: ``emit`` commits both in one transaction (the checkpoint also when the
filters drop the event) and returns only then. So an event is never taken without being
queued, and never queued twice because a crash came between the two. A checkpoint may also
be written on its own with :meth:`SourceContext.put_checkpoint`.

Who calls what, and when:

- the engine calls ``connector.create(config)`` once at startup (raise ConfigError for a
  problem the Struct could not express; never do I/O here);
- the engine calls ``await source.run(context)`` in its own task; ``run`` returns only when
  the source has nothing more to do, and is cancelled at shutdown (it must leave no work
  half-done that a checkpoint claims finished);
- ``run`` may raise SourceError; the engine logs it, names the source, and stops the
  service: a source that cannot read is not silently ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streamfn.clock import Clock

__all__ = ["Emit", "EventSource", "SourceContext"]


class EventSource(Protocol):
    async def run(self, context: SourceContext) -> None: ...


class Emit(Protocol):
    async def __call__(
        self, event: object, idempotency_key: str, /, checkpoint: tuple[str, bytes] | None = None
    ) -> bool:
        """Queue ``event`` (JSON-encodable) durably under ``idempotency_key`` (the source's
        default; the mapping's ``idempotency_key`` path may replace it), writing
        ``checkpoint`` (key, value) in the same transaction. True once queued; False when
        the filters dropped it or an event with that key is already queued."""
        ...


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What an event source gets from the engine. ``name`` is the mapping's stable id,
    under which its checkpoints are stored."""

    name: str
    function: str
    root: Path
    """The config file's directory: relative paths in a source's config start here."""
    region: str
    account: str
    clock: Clock
    log: logging.Logger
    emit: Emit
    get_checkpoints: Callable[[], Awaitable[Mapping[str, bytes]]]
    put_checkpoint: Callable[[str, bytes], Awaitable[None]]
    setdefault_checkpoint: Callable[[str, bytes], Awaitable[bytes]]
    """``await setdefault_checkpoint(key, value)``: store ``value`` unless the key has one;
    return what is stored (instances of a fleet starting at once agree on it)."""
    delete_checkpoint: Callable[[str], Awaitable[None]]
