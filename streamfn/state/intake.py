"""Queueing async events durably, and telling the dispatcher something changed.

Every producer of async events (the emit step of each event mapping, ``function:``
destinations of stream mappings, async invokes) calls :meth:`Intake.enqueue`; the
dispatcher waits on :attr:`Intake.changed` instead of polling the store.

Group commit: the first caller to find no write in progress becomes the writer; events
enqueued while it writes wait, and the writer hands the next batch (all of them, in one
``enqueue_many`` transaction) to the first of them, and so on. One producer at a time
costs one transaction per event, as before; many at once share transactions. Each call
still returns only after its own event is committed.

Cancellation is never held up (the store waits out an outage, so a shielded write could
wait for as long as the outage lasts): a cancelled caller's event may or may not be queued,
as for any cancelled store call, and nobody is left waiting. A writer cancelled during its
write puts the rest of its batch back, in order, for the next writer (``enqueue_many`` is
idempotent by key: an event the cancelled write did commit then answers False, already
queued); a caller cancelled while waiting withdraws its event if no write has taken it,
and, when it was to write the next batch, wakes the next caller to write instead.
"""

from __future__ import annotations

import random
import uuid

import anyio

from streamfn.clock import Clock
from streamfn.state.base import NewEvent, StateStore

__all__ = ["Intake"]


GROUP_COMMIT = 256
"""Most events one enqueue transaction writes."""


class _Waiting:
    __slots__ = ("done", "error", "event", "gone", "queued", "wake")

    def __init__(self, event: NewEvent) -> None:
        self.event = event
        self.wake = anyio.Event()  # done, or promoted to write the next batch
        self.done = False
        self.queued = False
        self.gone = False  # its caller was cancelled: never put back, never promoted
        self.error: BaseException | None = None


class Intake:
    """The async queue's way in. Build one per engine; see the module docstring."""

    def __init__(self, store: StateStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._changed = anyio.Event()
        self._waiting: list[_Waiting] = []
        self._writing = False
        self.received = 0

    @property
    def changed(self) -> anyio.Event:
        """Set at the next change to the queue (an event queued, or put back early). Take
        it *before* looking at the store, then wait on it: no change is missed."""
        if self._changed.is_set():
            self._changed = anyio.Event()
        return self._changed

    def notify(self) -> None:
        """Something in the queue became due sooner than the dispatcher may think."""
        self._changed.set()

    async def enqueue(
        self,
        function: str,
        payload: bytes,
        idempotency_key: str,
        *,
        ttl: float = 3600.0,
        request_id: str | None = None,
        checkpoint: tuple[str, str, bytes] | None = None,
    ) -> bool:
        """Queue one event durably; False when an event with its key is already queued.
        ``checkpoint`` (source, key, value) is committed with it (see StateStore.enqueue).
        Raises StateError as the store does. Cancellable at any point (see the module
        docstring): the event is then queued or not, and no other caller is held up."""
        me = _Waiting(
            NewEvent(
                function=function,
                payload=payload,
                request_id=request_id or _request_id(),
                idempotency_key=idempotency_key,
                idempotency_ttl=ttl,
                checkpoint=checkpoint,
            )
        )
        self._waiting.append(me)
        if self._writing:
            try:
                await me.wake.wait()
            except BaseException:
                self._withdraw(me)
                raise
        else:
            self._writing = True
        if not me.done:  # this caller writes the next batch (its own event is in it)
            await self._write(me)
        if me.error is not None:
            raise me.error
        return me.queued

    def _withdraw(self, me: _Waiting) -> None:
        """``me``'s caller was cancelled while it waited."""
        me.gone = True
        if me.done or me not in self._waiting:
            return  # answered, or in a batch being written: that writer answers it
        promoted = me.wake.is_set()
        self._waiting.remove(me)
        if promoted:  # it was to write the next batch: the next caller writes it
            self._hand_on()

    async def _write(self, me: _Waiting) -> None:
        """Write the next batch (``me`` heads it) and answer it, then hand on."""
        batch = self._waiting[:GROUP_COMMIT]
        del self._waiting[:GROUP_COMMIT]
        try:
            results = await self._store.enqueue_many(
                [w.event for w in batch], now=self._clock.time()
            )
        except Exception as exc:
            self._answer(batch, error=exc)
        except BaseException:  # cancelled: the others are written by the next writer
            self._waiting[:0] = [w for w in batch if w is not me and not w.gone]
            raise
        else:
            for waiting, queued in zip(batch, results, strict=True):
                waiting.queued = queued
            count = sum(results)
            if count:
                self.received += count
                self.notify()
            self._answer(batch)
        finally:
            self._hand_on()

    @staticmethod
    def _answer(batch: list[_Waiting], *, error: BaseException | None = None) -> None:
        for waiting in batch:
            waiting.error = error
            waiting.done = True
            waiting.wake.set()

    def _hand_on(self) -> None:
        if self._waiting:
            self._waiting[0].wake.set()  # it writes the next batch
        else:
            self._writing = False

    async def destination(self, function: str, payload: bytes, key: str) -> bool:
        """``enqueue`` as a :data:`~streamfn.invoke.destinations.EnqueueFn` (for the
        ``function:`` destinations of :class:`~streamfn.invoke.destinations.DestinationWriter`)."""
        return await self.enqueue(function, payload, key)


def _request_id() -> str:
    """A random (version 4) UUID, as AWS's requestId; ``uuid4()`` reads ``os.urandom``
    each time, several times slower, and these need not be unguessable."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))
