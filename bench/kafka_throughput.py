"""Kafka throughput: streamfn's Kafka mapping against a raw aiokafka loop, same broker, same run.

Run from the repository root::

    python bench/kafka_throughput.py [--records N] [--repeat R] [--handler sync|async]
                                     [--runtime inline|python]

It starts the embedded broker (Tansu, memory storage), produces N (default 200,000) small
JSON records to a 4-partition topic, then times, each from the first record to the last:

(a) raw: one aiokafka consumer in a fresh group, ``getmany(max_records=500)``, JSON-decoding
    every value and summing a field, committing after every ``getmany``;
(b) streamfn: an in-process :class:`~streamfn.engine.Engine` with the inline runtime (or,
    with ``--runtime python``, worker processes) and a
    Kafka mapping (batch_size 500, default 0.5 s batching window and commit interval) whose
    handler base64-decodes and JSON-decodes every value of its event and sums the field;
    from the first fetch that returns records to the end of the last invocation.

Each is run R times (default 3, a fresh consumer group each time) and the median counts:
the raw loop's rate varies by a third from run to run on Tansu, and the machine may be
busy. Prints records/s for both and the ratio streamfn / raw; asserts nothing. Both sides
do the same per-record work, so the ratio is what the mapping adds: event encoding, offset
tracking, batching, invocation and the handler's base64 step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.kafka.embedded import create_topic, open_embedded_kafka
from streamfn.config import parse_config
from streamfn.engine import Engine
from streamfn.plugins import Registry

TOPIC = "bench"
PARTITIONS = 4
BATCH = 500

HANDLER = """
import base64
import json
import time

STATE = {"count": 0, "sum": 0, "first": None, "last": None}


{prefix}def handler(event, context):
    if STATE["first"] is None:
        STATE["first"] = time.perf_counter()
    total = 0
    count = 0
    for records in event["records"].values():
        for record in records:
            total += json.loads(base64.b64decode(record["value"]))["amount"]
            count += 1
    STATE["sum"] += total
    STATE["count"] += count
    STATE["last"] = time.perf_counter()
"""


async def produce(servers: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=10, max_batch_size=256_000)
    await producer.start()
    try:
        pending = []
        for i in range(count):
            value = msgspec.json.encode({"id": i, "amount": i % 10, "customer": f"c{i % 97}"})
            # Round-robin over the partitions, so that each holds a quarter of the records.
            pending.append(await producer.send(TOPIC, value, partition=i % PARTITIONS))
            if len(pending) >= 10_000:
                for future in pending:
                    await future
                pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()


async def raw(servers: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=servers,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        seen, total, first = 0, 0, None
        decode = json.loads  # what the handler uses
        while seen < count:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            if not fetched:
                continue
            if first is None:
                first = time.perf_counter()
            for messages in fetched.values():
                for message in messages:
                    total += decode(message.value)["amount"]
                seen += len(messages)
            await consumer.commit()
        assert first is not None
        return seen / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def streamfn(servers: str, count: int, handler: str, root: Path, runtime: str) -> float:
    prefix = "async " if handler == "async" else ""
    (root / "bench_sum.py").write_text(textwrap.dedent(HANDLER).replace("{prefix}", prefix))
    sys.modules.pop("bench_sum", None)
    registry = Registry.discover()
    raw_config = {
        "service": {"state_dir": str(root / "state")},
        "functions": {"sum": {"handler": "bench_sum:handler", "runtime": runtime}},
        "event_sources": [
            {
                "function": "sum",
                "type": "kafka",
                "bootstrap_servers": servers,
                "topic": TOPIC,
                "consumer_group_id": f"streamfn-{uuid.uuid4().hex[:8]}",
                "batch_size": BATCH,
                "session_timeout": 6,
                "heartbeat_interval": 1,
            }
        ],
    }
    config = parse_config(raw_config, registry, path=root / "streamfn.toml")
    engine = Engine(config, registry)
    first = _time_first_fetch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await engine.started.wait()
        if runtime == "inline":
            # The handler's module counts what it summed; no event to wait on across that line.
            while (state := _state()) is None or state["count"] < count:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            last = state["last"]
        else:  # the handler runs in a worker process: watch the mapping's counters
            [mapping] = engine.streams.values()
            while mapping.statistics().records_delivered < count:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            last = time.perf_counter()
        engine.stop()
    return count / (last - first[0])


def _time_first_fetch() -> list[float]:
    """Note when the Kafka source first returns records (the raw loop's "first record")."""
    from connectors.kafka.source import KafkaSource

    first: list[float] = []
    fetch = KafkaSource.fetch

    async def timed(self: KafkaSource, *args: Any) -> Any:
        records = await fetch(self, *args)
        if records and not first:
            first.append(time.perf_counter())
        return records

    KafkaSource.fetch = timed  # type: ignore[method-assign]
    return first


def _state() -> dict[str, float] | None:
    module = sys.modules.get("bench_sum")
    return getattr(module, "STATE", None)


async def main(count: int, handler: str, repeat: int, runtime: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("streamfn.functions").setLevel(logging.WARNING)  # no START/END lines
    async with open_embedded_kafka() as broker:
        servers = broker.bootstrap_servers
        await create_topic(servers, TOPIC, PARTITIONS)
        started = time.perf_counter()
        await produce(servers, count)
        print(f"produced {count:,} records in {time.perf_counter() - started:.1f}s")
        raw_rates, our_rates = [], []
        for _ in range(repeat):
            raw_rates.append(await raw(servers, count))
            with tempfile.TemporaryDirectory() as tmp:
                our_rates.append(await streamfn(servers, count, handler, Path(tmp), runtime))
        raw_rate, ours = statistics.median(raw_rates), statistics.median(our_rates)
        runs = f"median of {repeat}: " if repeat > 1 else ""
        print(
            f"raw aiokafka getmany({BATCH}) + commit: {raw_rate:>10,.0f} records/s ({runs}"
            + ", ".join(f"{r:,.0f}" for r in raw_rates)
            + ")"
        )
        print(
            f"streamfn ({runtime}, {handler} handler):   {ours:>10,.0f} records/s ({runs}"
            + ", ".join(f"{r:,.0f}" for r in our_rates)
            + ")"
        )
        print(f"ratio streamfn / raw: {ours / raw_rate:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--handler", choices=("sync", "async"), default="sync")
    parser.add_argument(
        "--runtime",
        choices=("inline", "python"),
        default="inline",
        help="inline: in the engine (issue 3's figure); python: worker processes (issue 4's)",
    )
    args = parser.parse_args()
    anyio.run(
        main,
        args.records,
        args.handler,
        args.repeat,
        args.runtime,
        backend_options={"use_uvloop": True},
    )
