"""Group commit of the dispatcher's decisions.

Every event's decision is one :class:`~streamfn.state.base.Settlement`; written one store
call each, the calls (not the disk) would bound the async path. The :class:`DecisionWriter`
queues them (:meth:`DecisionWriter.submit` never waits) and its one task writes whatever
has queued up while the previous write ran, in one transaction (``settle_many``); only
after the commit does it report each decision as written (or fenced off), so nothing
counts an outcome before it is durable. The store waits out an outage itself
(:mod:`streamfn.state.outage`), so an outcome that was decided is recorded once the store
is back; a store error (never retriable) ends the writer, and so the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from streamfn.state.base import QueuedEvent, Settlement, StateStore

__all__ = ["DecisionWriter"]

Written = Callable[[QueuedEvent, Settlement, bool], None]
"""Called once a submitted decision is committed: (event, settlement, written), written
False when the lease token was stale (nothing written)."""


class DecisionWriter:
    """Writes settlements in batches; see the module docstring. Run :meth:`run` in a task
    that outlives every :meth:`submit`, and await :meth:`flushed` before ending it."""

    def __init__(self, store: StateStore, written: Written, *, limit: int = 256) -> None:
        self._store = store
        self._written = written
        self._limit = limit
        self._queue: list[tuple[QueuedEvent, Settlement]] = []
        self._ready = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()

    def submit(self, event: QueuedEvent, settlement: Settlement) -> None:
        """Queue ``settlement`` for the leased ``event``; ``written`` is called once it is
        committed. Never waits."""
        self._queue.append((event, settlement))
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._ready.set()

    async def flushed(self) -> None:
        """Wait until everything submitted so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write until cancelled; a store error propagates (the decisions queued then are
        not written: their events come back when their leases end)."""
        while True:
            if not self._queue:
                self._idle.set()
                self._ready = anyio.Event()
                await self._ready.wait()
                continue
            batch = self._queue[: self._limit]
            del self._queue[: self._limit]
            results = await self._store.settle_many(batch)
            for (event, settlement), written in zip(batch, results, strict=True):
                self._written(event, settlement, written)
