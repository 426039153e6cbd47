"""Riding out a state-store outage: retriable store errors are retried for as long as it lasts.

Theory of operation
-------------------

Each store backend sends every call through one :class:`OutageRetry` (its single choke
point). A call whose attempt raises a *retriable* error (``StreamfnError.retriable``: the
database is unreachable, busy, or the pool found no connection in time) is tried again
with capped exponential backoff, with no limit on the number of attempts: the service waits
for its store rather than stop, so intake waits (a source's ``emit`` blocks), and work in
flight records its outcome once the store is back. Any other error is raised at once, and
so is the store's own "after close" error, which ends the retrying of a closed store.

A call being retried is cancellable: cancellation interrupts the backoff wait and the call
raises the cancellation, trying no more. (An attempt the backend shields, a transaction
already sent, still ends before the cancellation lands.)

The outage is logged twice, not once per call: a warning when the first call fails (naming
the store, the operation and the error) and an info line when the first call succeeds
again, with how long the store was unavailable. Calls that were already in flight when the
store came back may still fail with a stale error; they do not re-open the outage (each
attempt remembers which outage "epoch" it started in).

A retried call may repeat a write whose commit reached the database before the connection
was lost; every store operation must therefore be safe to repeat (see the backends).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from streamfn.clock import Clock
from streamfn.errors import StreamfnError

__all__ = ["OutageRetry"]

_T = TypeVar("_T")

log = logging.getLogger("streamfn.state")


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, StreamfnError) and exc.retriable


class OutageRetry:
    """Retries one store's calls through outages and logs each outage once.

    ``where`` names the store in log lines (never a password). A call that failed is tried
    again at once, then after ``first_wait``, doubling up to ``max_wait`` between attempts.
    Times are read and waited through ``clock``. One per store, used from its event loop.
    """

    def __init__(
        self,
        where: str,
        *,
        clock: Clock,
        first_wait: float = 0.1,
        max_wait: float = 3.0,
        logger: logging.Logger = log,
    ) -> None:
        self._where = where
        self._clock = clock
        self._log = logger
        self._retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_retriable),
            wait=tenacity.wait_exponential(multiplier=first_wait, min=first_wait, max=max_wait),
            sleep=clock.sleep,
            reraise=True,
        )
        self._down_since: float | None = None
        self._epoch = 0  # bumped when an outage ends

    @property
    def down_since(self) -> float | None:
        """``clock.monotonic()`` when the current outage began; None while the store is up."""
        return self._down_since

    async def run(self, op: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """``await attempt()`` until it returns or raises a non-retriable error (raised).

        Called by a store backend for operation ``op`` (named in the outage warning).
        Cancellation stops the retrying at once (see the module docstring)."""
        try:  # the common case, without building a retry loop: one attempt that works
            return await self._once(op, attempt)
        except BaseException as exc:
            if not _retriable(exc):
                raise
        # A tenacity controller keeps per-call state: one copy per retried call.
        return await self._retrying.copy()(self._once, op, attempt)

    async def _once(self, op: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        epoch = self._epoch
        try:
            result = await attempt()
        except BaseException as exc:
            if _retriable(exc) and self._down_since is None and epoch == self._epoch:
                self._down_since = self._clock.monotonic()
                self._log.warning(
                    "state store %s unavailable (%s: %s); retrying every call until it is back",
                    self._where,
                    op,
                    exc,
                )
            raise
        if self._down_since is not None:
            down_for = self._clock.monotonic() - self._down_since
            self._down_since = None
            self._epoch += 1
            self._log.info("state store %s is back after %.1f s", self._where, down_for)
        return result
