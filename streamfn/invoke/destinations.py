"""Destination URIs and delivering records to them.

``dir:PATH``
    one JSON file per record, written atomically (temporary file, fsync, rename) so a
    reader never sees half a record; PATH is relative to the config file.
``function:NAME``
    the record becomes an async event of function NAME (AWS invokes a Lambda destination
    asynchronously), queued durably in the state store.
``kafka://TOPIC``
    parsed here; delivered by the Kafka connector for its own failure records.

Delivery raises DestinationError (retriable): the caller keeps the event and tries again,
so a record is never dropped because its destination was briefly unwritable.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec

from streamfn.errors import DestinationError, InvalidDestinationError


class DirDestination(msgspec.Struct, frozen=True):
    path: str
    scheme = "dir"


class FunctionDestination(msgspec.Struct, frozen=True):
    function: str
    qualifier: str | None = None
    scheme = "function"


class KafkaDestination(msgspec.Struct, frozen=True):
    topic: str
    scheme = "kafka"


Destination = DirDestination | FunctionDestination | KafkaDestination

_FUNCTION = re.compile(
    r"^function:(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>[\w$-]{1,128}))?$"
)
_KAFKA = re.compile(r"^kafka://(?P<topic>[A-Za-z0-9._-]{1,249})$")


def parse_destination(uri: str) -> Destination:
    if uri.startswith("dir:"):
        path = uri[len("dir:") :]
        if not path:
            raise InvalidDestinationError(f"{uri!r}: dir: needs a path, e.g. dir:failed")
        return DirDestination(path)
    if match := _FUNCTION.match(uri):
        return FunctionDestination(match["name"], match["qualifier"])
    if match := _KAFKA.match(uri):
        return KafkaDestination(match["topic"])
    raise InvalidDestinationError(
        f"{uri!r} is not a destination; use dir:PATH, function:NAME or kafka://TOPIC"
    )


def record_filename(record: dict[str, Any]) -> str:
    context = record.get("requestContext", {})
    stamp = re.sub(r"[^0-9A-Za-z]", "", str(record.get("timestamp", "")))
    request_id = context.get("requestId") or uuid.uuid4().hex
    condition = context.get("condition", "record")
    return f"{stamp}-{condition}-{request_id}.json"


def write_record_file(directory: Path, record: dict[str, Any]) -> Path:
    """Write one record as ``directory/<timestamp>-<condition>-<requestId>.json``,
    atomically. Blocking: call it from a worker thread."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / record_filename(record)
    temporary = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    data = msgspec.json.encode(record)
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, final)
    return final


EnqueueFn = Callable[[str, bytes, str], Awaitable[bool]]
"""``await enqueue(function, payload, idempotency_key)``: queue an async event durably."""


class DestinationWriter:
    """Delivers destination records for the async path (dir: and function:)."""

    def __init__(self, root: Path, enqueue: EnqueueFn) -> None:
        self._root = root
        self._enqueue = enqueue

    async def deliver(self, destination: Destination, record: dict[str, Any]) -> None:
        try:
            if isinstance(destination, DirDestination):
                await anyio.to_thread.run_sync(
                    write_record_file, (self._root / destination.path).resolve(), record
                )
            elif isinstance(destination, FunctionDestination):
                context = record["requestContext"]
                key = f"destination:{context['requestId']}:{context['condition']}"
                await self._enqueue(destination.function, msgspec.json.encode(record), key)
            else:
                raise DestinationError(f"{destination.scheme}: destinations are not supported here")
        except OSError as exc:
            raise DestinationError(f"cannot write to {destination}: {exc}") from exc
