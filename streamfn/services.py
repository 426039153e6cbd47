"""What both execution paths are given: one value, built by the engine and passed in.

Nothing is reached through another path's object: the async dispatcher, every event
mapping and every stream mapping get the same :class:`Services`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from streamfn.clock import Clock
from streamfn.invoke.destinations import DestinationWriter
from streamfn.invoke.invoker import Invoker
from streamfn.state.base import StateStore
from streamfn.state.intake import Intake

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    clock: Clock
    """Every time read and every wait of both paths."""
    store: StateStore
    """Queue, outbox, idempotency records, checkpoints."""
    invoker: Invoker
    """Invocations within the concurrency limits (``invoke`` for streams; ``try_acquire``
    and ``run`` for the async dispatcher)."""
    intake: Intake
    """The async queue's way in: ``enqueue`` an event durably, waking the dispatcher."""
    destinations: DestinationWriter
    """Delivers destination records (``deliver(destination, record)``: ``dir:``,
    ``function:`` through ``intake``; connectors add schemes)."""
    log_for: Callable[[str], logging.Logger]
    """The logger of a named part (``log_for("source.inbox")``)."""
    region: str
    account: str
