"""The outbox driver: delivers destination records the dispatcher's decisions wrote.

Theory of operation. A decided event's ``dir:`` (and plugin-scheme) records are written
to the store's outbox in the same transaction as the decision, so the event is never
invoked again whatever happens to its records. This driver leases due records, delivers
each through the :class:`~streamfn.invoke.destinations.DestinationWriter`, and removes
it; a delivery that fails (read-only directory, disk full) is put back with backoff
(1 s doubling to 5 minutes, :func:`streamfn.backoff.exponential`) and tried again for as
long as it takes. Records are leased with a token, so in a fleet each is delivered by
one instance at a time; a crash between delivery and removal delivers a record twice
(file names are derived from the record, so a ``dir:`` record is rewritten in place).
Every wait goes through the clock.
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from streamfn.backoff import exponential
from streamfn.clock import wait_for_change
from streamfn.errors import DestinationError, InvalidDestinationError
from streamfn.invoke.destinations import parse_destination
from streamfn.services import Services
from streamfn.state.base import OutboxEntry

__all__ = ["OutboxDriver", "OutboxStatistics"]

log = logging.getLogger("streamfn.async.outbox")


class OutboxStatistics(msgspec.Struct, frozen=True, kw_only=True):
    delivered: int = 0
    failures: int = 0


class OutboxDriver:
    """Delivers outbox records until cancelled (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        *,
        batch: int = 32,
        lease_for: float = 60.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
    ) -> None:
        self._services = services
        self._batch = batch
        self._lease_for = lease_for
        self._base = backoff_base
        self._cap = backoff_cap
        self._changed = anyio.Event()
        self._delivered = 0
        self._failures = 0

    def notify(self) -> None:
        """New records were written: look now instead of at the next due time."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(delivered=self._delivered, failures=self._failures)

    async def run(self) -> None:
        """Deliver until cancelled. Store errors propagate (the store waits out an outage
        itself); destination errors never do."""
        store, clock = self._services.store, self._services.clock
        while True:
            changed = self._changed
            entries = await store.lease_outbox(
                now=clock.time(), limit=self._batch, lease_for=self._lease_for
            )
            for entry in entries:
                await self._deliver(entry)
            if len(entries) == self._batch:
                continue
            due = await store.outbox_next_due()
            delay = 3600.0 if due is None else due - clock.time()
            if delay > 0:
                await wait_for_change(changed, delay, clock)

    async def _deliver(self, entry: OutboxEntry) -> None:
        services = self._services
        try:
            record = msgspec.json.decode(entry.record)
            await services.destinations.deliver(parse_destination(entry.destination), record)
        except (DestinationError, InvalidDestinationError, msgspec.DecodeError) as exc:
            delay = exponential(entry.attempts, base=self._base, cap=self._cap)
            self._failures += 1
            log.warning(
                "destination record for %s (delivery %d) failed: %s; retrying in %.0fs",
                entry.destination,
                entry.attempts + 1,
                exc,
                delay,
            )
            await services.store.outbox_retry(
                entry.id,
                token=entry.token,
                visible_at=services.clock.time() + delay,
                attempts=entry.attempts + 1,
            )
            return
        self._delivered += 1
        await services.store.outbox_done(entry.id, token=entry.token)
