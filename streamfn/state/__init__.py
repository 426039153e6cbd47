"""Durable state: the async queue, idempotency records and event-source checkpoints.

:mod:`streamfn.state.base` holds the :class:`~streamfn.state.base.StateStore` protocol and
its semantics. Two backends implement it:

- :mod:`streamfn.state.sqlite` (``open_sqlite_store``), the default: the file
  ``<state_dir>/state.db``, owned by one process.
- :mod:`streamfn.state.postgres` (``open_postgres_store``), when ``[service] state_dir`` is
  a ``postgresql://`` or ``postgres://`` URL: one database shared by a fleet of processes.

:func:`open_state_store` picks one from the config. Importing this package imports no
backend; the chosen one is imported when opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamfn.clock import Clock
from streamfn.config import Config
from streamfn.state.base import StateStore

__all__ = ["open_state_store"]


@contextlib.asynccontextmanager
async def open_state_store(
    config: Config, *, clock: Clock | None = None
) -> AsyncIterator[StateStore]:
    """Open the state store ``config`` names: Postgres when ``config.state_url`` is set,
    else the SQLite file ``state.db`` in ``config.state_dir`` (created if missing).
    ``clock`` (default: the system clock) times the waits through a store outage.
    Raises StateError (see each backend's opener)."""
    if config.state_url is not None:
        from streamfn.state.postgres import open_postgres_store

        async with open_postgres_store(config.state_url, clock=clock) as store:
            yield store
        return
    from streamfn.state.sqlite import open_sqlite_store

    config.state_dir.mkdir(parents=True, exist_ok=True)
    async with open_sqlite_store(config.state_dir / "state.db", clock=clock) as sqlite_store:
        yield sqlite_store
