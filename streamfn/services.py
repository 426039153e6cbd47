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

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    clock: Clock
    store: StateStore
    invoker: Invoker
    destinations: DestinationWriter
    """Delivers destination records (``dir:``, ``function:``; connectors add schemes)."""
    log_for: Callable[[str], logging.Logger]
    """The logger of a named part (``log_for("source.inbox")``)."""
    region: str
    account: str
