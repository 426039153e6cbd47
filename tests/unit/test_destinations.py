"""Destination URIs and atomic record files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamfn.errors import DestinationError, InvalidDestinationError
from streamfn.invoke.destinations import (
    DestinationWriter,
    DirDestination,
    FunctionDestination,
    KafkaDestination,
    parse_destination,
    write_record_file,
)

RECORD = {
    "version": "1.0",
    "timestamp": "2026-11-27T10:00:00.123Z",
    "requestContext": {"requestId": "abc", "condition": "RetriesExhausted"},
}


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("dir:failed", DirDestination("failed")),
        ("dir:/var/streamfn/failed", DirDestination("/var/streamfn/failed")),
        ("function:dlq", FunctionDestination("dlq")),
        ("function:dlq:live", FunctionDestination("dlq", "live")),
        ("kafka://orders-dlq", KafkaDestination("orders-dlq")),
    ],
)
def test_destination_uris_parse(uri: str, parsed: object) -> None:
    assert parse_destination(uri) == parsed


@pytest.mark.parametrize(
    "uri", ["dir:", "sqs:queue", "function:", "function:a b", "kafka://", "failed"]
)
def test_bad_destination_uris_say_what_is_allowed(uri: str) -> None:
    with pytest.raises(
        InvalidDestinationError,
        match="dir:PATH, function:NAME or kafka://TOPIC" if uri != "dir:" else "dir: needs a path",
    ):
        parse_destination(uri)


def test_records_are_written_atomically_one_file_each(tmp_path: Path) -> None:
    path = write_record_file(tmp_path / "failed", RECORD)
    assert path.name == "20261127T100000123Z-RetriesExhausted-abc.json"
    assert json.loads(path.read_text()) == RECORD
    assert [p.name for p in (tmp_path / "failed").iterdir()] == [path.name]  # no temp files


@pytest.mark.anyio
async def test_function_destinations_enqueue_and_unwritable_dirs_raise(tmp_path: Path) -> None:
    queued: list[tuple[str, bytes, str]] = []

    async def enqueue(function: str, payload: bytes, key: str) -> bool:
        queued.append((function, payload, key))
        return True

    writer = DestinationWriter(tmp_path, enqueue)
    await writer.deliver(FunctionDestination("dlq"), RECORD)
    [(function, payload, key)] = queued
    assert function == "dlq" and json.loads(payload) == RECORD
    assert key == "destination:abc:RetriesExhausted"

    (tmp_path / "blocked").write_text("a file where a directory should be")
    with pytest.raises(DestinationError, match="cannot write"):
        await writer.deliver(DirDestination("blocked"), RECORD)
