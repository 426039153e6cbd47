"""The contract between the engine and an event source (filedrop, cron, plugins).

An event source produces discrete events, as S3 notifications and schedules do on AWS, and
hands each to :meth:`SourceContext.emit`. ``emit`` returns once the event is durably
queued (or dropped by the mapping's filters); only then may the source mark the file or
tick as taken, with :meth:`SourceContext.put_checkpoint`. A crash between the two leads to
the event being emitted again, which the idempotency key turns into a no-op.

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


class EventSource(Protocol):
    async def run(self, context: SourceContext) -> None: ...


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
    emit: Callable[[object, str], Awaitable[bool]]
    """``await emit(event, default_idempotency_key)``: True once durably queued, False when
    filtered out or already queued under the same key."""
    get_checkpoints: Callable[[], Awaitable[Mapping[str, bytes]]]
    put_checkpoint: Callable[[str, bytes], Awaitable[None]]
    delete_checkpoint: Callable[[str], Awaitable[None]]
