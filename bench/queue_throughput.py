"""Benchmark: the durable async queue alone, on SQLite.

enqueue → lease → claim + count the attempt → invoke (inline runtime, a no-op handler) →
settle (key completed, event removed), through the real :class:`Dispatcher` and
:class:`SqliteStore`, for N events enqueued by concurrent producers. Printed beside a
baseline measured in the same run: raw ``sqlite3`` in one thread, inserting the same rows
and deleting them again (one transaction per 256 rows, the store's group-commit size),
the floor of any durable queue in this file format on this machine. Prints, never asserts.

    python bench/queue_throughput.py [--events 20000] [--producers 64]

(Not ``bench/queue.py``: run as a script, that name would shadow the standard library's
``queue`` module for every benchmark in this directory.)
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamfn.clock import SystemClock  # noqa: E402
from streamfn.config import parse_config  # noqa: E402
from streamfn.events.dispatcher import Dispatcher  # noqa: E402
from streamfn.invoke.destinations import DestinationWriter  # noqa: E402
from streamfn.invoke.invoker import Invoker  # noqa: E402
from streamfn.policies import dispatch_policy, invoker_policy, runtime_policy  # noqa: E402
from streamfn.runtime.router import open_runtime  # noqa: E402
from streamfn.services import Services  # noqa: E402
from streamfn.state.intake import Intake  # noqa: E402
from streamfn.state.sqlite import open_sqlite_store  # noqa: E402

HANDLER = "async def handler(event, context):\n    return None\n"  # on the loop: no thread hop


def baseline(work: Path, events: int) -> float:
    """Raw sqlite3, one thread: insert every row, then delete it, 256 per transaction."""
    conn = sqlite3.connect(work / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, function TEXT, payload BLOB,"
        " request_id TEXT, idempotency_key TEXT, idempotency_ttl REAL, enqueued_at REAL,"
        " visible_at REAL, UNIQUE (function, idempotency_key))"
    )
    rows = [("noop", b"{}", str(uuid.uuid4()), f"k-{i}", 3600.0, 0.0, 0.0) for i in range(events)]
    started = time.perf_counter()
    for i in range(0, events, 256):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO queue (function, payload, request_id, idempotency_key, idempotency_ttl,"
            " enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows[i : i + 256],
        )
        conn.execute("COMMIT")
    ids = [(row[0],) for row in conn.execute("SELECT id FROM queue")]
    for i in range(0, events, 256):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM queue WHERE id = ?", ids[i : i + 256])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return events / elapsed


async def streamfn_queue(work: Path, events: int, producers: int) -> float:
    (work / "noop.py").write_text(HANDLER)
    config = parse_config(
        {
            "service": {"max_concurrency": 64},
            "functions": {"noop": {"handler": "noop:handler", "runtime": "inline"}},
        },
        {},
        path=work / "streamfn.toml",
    )
    clock = SystemClock()
    async with (
        open_sqlite_store(work / "state.db") as store,
        open_runtime(runtime_policy(config), clock=clock) as runtime,
    ):
        intake = Intake(store, clock)
        services = Services(
            clock=clock,
            store=store,
            invoker=Invoker(invoker_policy(config), runtime),
            intake=intake,
            destinations=DestinationWriter(work, intake.destination),
            log_for=lambda part: logging.getLogger(f"streamfn.{part}"),
            region="local",
            account="000000000000",
        )
        dispatcher = Dispatcher(dispatch_policy(config), services)

        async def produce(first: int) -> None:
            for i in range(first, events, producers):
                await intake.enqueue("noop", b"{}", f"k-{i}")

        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            started = time.perf_counter()
            async with anyio.create_task_group() as intake_tasks:
                for p in range(producers):
                    intake_tasks.start_soon(produce, p)
            while dispatcher.statistics().succeeded < events:  # noqa: ASYNC110
                await anyio.sleep(0.001)
            elapsed = time.perf_counter() - started
            dispatcher.stop()
            tg.cancel_scope.cancel()
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # START/END/REPORT lines are not the subject
    with tempfile.TemporaryDirectory() as work:
        raw = baseline(Path(work), args.events)
    with tempfile.TemporaryDirectory() as work:
        ours = anyio.run(
            streamfn_queue,
            Path(work),
            args.events,
            args.producers,
            backend_options={"use_uvloop": True},
        )
    print(f"{args.events} events, {args.producers} producers, SQLite, inline no-op handler")
    print(f"{'path':52} {'events/s':>10}")
    print(f"{'raw sqlite3 insert + delete, one thread (baseline)':52} {raw:10.0f}")
    print(f"{'streamfn enqueue → lease → claim → invoke → settle':52} {ours:10.0f}")
    print(f"ratio streamfn / baseline: {ours / raw:.2f}")


if __name__ == "__main__":
    main()
