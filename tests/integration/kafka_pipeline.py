"""Kafka-mapped pipelines for integration tests: a config, handlers that record what they see,
and readers for those records.

A test builds a :class:`Pipeline` in its ``tmp_path``: ``function(...)`` adds a function
whose handler module is written next to the config, ``kafka(...)`` a Kafka event source,
``write()`` the ``streamfn.toml``; ``conftest.Service`` runs it. Handlers append one JSON line
per invocation to ``out/<name>-<pid>.jsonl`` (one ``write`` on an ``O_APPEND`` descriptor, so
lines of concurrent invocations and processes never interleave); :meth:`Pipeline.calls`
reads them back. The recording helpers live in ``recorder.py`` (:data:`RECORDER`), which
every handler module imports.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_broker import GROUP_TIMEOUTS

from connectors.kafka.embedded import create_topic

RECORDER = '''
"""Written by the test: what handlers use to record their invocations."""
import base64
import json
import os
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
OUT.mkdir(exist_ok=True)


def records(event):
    """(topic-partition key, record) pairs of a self-managed Kafka event, in order."""
    for name, batch in event["records"].items():
        for record in batch:
            yield name, record


def value(record):
    return base64.b64decode(record["value"]).decode() if record.get("value") else None


def key(record):
    return base64.b64decode(record["key"]).decode() if "key" in record else None


def write(name, entry):
    entry = {"pid": os.getpid(), "time": time.time(), **entry}
    line = (json.dumps(entry) + "\\n").encode()
    fd = os.open(OUT / f"{name}-{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def seen(event):
    """The invocation's records as [partition, offset, key, value] lists."""
    return [[r["partition"], r["offset"], key(r), value(r)] for _, r in records(event)]
'''

RECORD_ALL = """
import time
from recorder import seen, write


def handler(event, context):
    time.sleep({delay})
    write("{name}", {{"records": seen(event)}})
"""


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: str | None
    value: str | None


@dataclass(frozen=True)
class Call:
    """One recorded invocation."""

    pid: int
    time: float
    records: tuple[Record, ...]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    root: Path
    bootstrap_servers: str
    service: dict[str, Any] = field(default_factory=lambda: {"drain_timeout": 10})
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    runtime: str = "inline"

    def __post_init__(self) -> None:
        (self.root / "functions").mkdir(parents=True, exist_ok=True)
        (self.root / "functions" / "recorder.py").write_text(RECORDER)

    @property
    def config(self) -> Path:
        return self.root / "streamfn.toml"

    def function(
        self, name: str, source: str | None = None, *, delay: float = 0.0, **fields: Any
    ) -> None:
        """Add function ``name`` whose module ``<name>.py`` holds ``source`` (default: record
        every invocation under ``name``, after ``delay`` seconds of work)."""
        code = source if source is not None else RECORD_ALL.format(name=name, delay=delay)
        (self.root / "functions" / f"{name}.py").write_text(code)
        self.functions[name] = {
            "handler": f"{name}:handler",
            "code": "functions",
            "runtime": self.runtime,
            "timeout": 10,
            **fields,
        }

    def kafka(self, function: str, topic: str, **fields: Any) -> None:
        self.sources.append(
            {
                "function": function,
                "type": "kafka",
                "bootstrap_servers": self.bootstrap_servers,
                "topic": topic,
                "maximum_batching_window": 0.1,
                "session_timeout": GROUP_TIMEOUTS["session_timeout_ms"] / 1000,
                "heartbeat_interval": GROUP_TIMEOUTS["heartbeat_interval_ms"] / 1000,
                **fields,
            }
        )

    def write(self) -> Path:
        lines = ["[service]", *_assignments(self.service)]
        for name, fields in self.functions.items():
            lines += ["", f"[functions.{name}]", *_assignments(fields)]
        for fields in self.sources:
            lines += ["", "[[event_sources]]", *_assignments(fields)]
        self.config.write_text("\n".join(lines) + "\n")
        return self.config

    def calls(self, name: str) -> list[Call]:
        """Every recorded invocation of ``name``, all processes, in time order."""
        calls = []
        for path in sorted((self.root / "functions" / "out").glob(f"{name}-[0-9]*.jsonl")):
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                records = tuple(Record(*r) for r in entry.pop("records", []))
                calls.append(Call(entry.pop("pid"), entry.pop("time"), records, entry))
        return sorted(calls, key=lambda call: call.time)

    def delivered(self, name: str) -> list[Record]:
        return [record for call in self.calls(name) for record in call.records]

    def failure_records(self, directory: str) -> list[dict[str, Any]]:
        path = self.root / directory
        return [json.loads(p.read_text()) for p in sorted(path.glob("*.json"))]


def produce_at(
    bootstrap: str, topic: str, values: Sequence[bytes], timestamp_ms: int, partition: int = 0
) -> list[tuple[int, int]]:
    """Produce ``values`` with the given CREATE_TIME; return each (partition, offset)."""

    async def send() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            acks = [
                await producer.send_and_wait(
                    topic, value, partition=partition, timestamp_ms=timestamp_ms
                )
                for value in values
            ]
        finally:
            await producer.stop()
        return [(ack.partition, ack.offset) for ack in acks]

    return asyncio.run(send())


def consume_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[Any]:
    """Read ``count`` records of ``topic`` from the beginning (no group); fail after 20 s."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            out: list[Any] = []
            async with asyncio.timeout(20):
                while len(out) < count:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(batch)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def create_topics(bootstrap: str, *topics: tuple[str, int]) -> None:
    async def create() -> None:
        for name, partitions in topics:
            await create_topic(bootstrap, name, partitions)

    asyncio.run(create())


def offsets_by_partition(records: Iterable[Record]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for record in records:
        out.setdefault(record.partition, []).append(record.offset)
    return out


def group(function: str) -> str:
    return f"streamfn-{function}"


def json_values(count: int, **extra: Any) -> list[tuple[bytes | None, bytes, Sequence[Any]]]:
    """``count`` keyless producer records ``{"n": i, ...}``."""
    return [(None, json.dumps({"n": i, **extra}).encode(), ()) for i in range(count)]


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _assignments(fields: dict[str, Any]) -> list[str]:
    return [f"{k if _BARE_KEY.match(k) else json.dumps(k)} = {_toml(v)}" for k, v in fields.items()]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
