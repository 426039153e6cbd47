"""An environment's output pipe as function log lines (no process: a pipe written here)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import pytest

from streamfn.runtime.process.output import MAX_LINE, OutputReader, timestamp


class Clock:
    def time(self) -> float:
        return 1_704_067_200.125  # 2024-01-01T00:00:00.125Z

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("not used")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


pytestmark = pytest.mark.anyio


@pytest.fixture
async def pipe() -> AsyncIterator[tuple[OutputReader, int, Lines]]:
    read, write = os.pipe()
    lines = Lines()
    log = logging.getLogger("test.process.output")
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    log.propagate = False
    reader = OutputReader(read, log=log, clock=Clock())
    yield reader, write, lines
    reader.close()
    os.close(write)
    log.removeHandler(lines)


async def test_lines_carry_the_timestamp_and_request_id(
    pipe: tuple[OutputReader, int, Lines],
) -> None:
    reader, write, lines = pipe
    reader.request_id = "r-1"
    os.write(write, b"first\nsecond\r\nunfinished")
    reader.drain()
    assert lines.lines == [
        "2024-01-01T00:00:00.125Z\tr-1\tfirst",
        "2024-01-01T00:00:00.125Z\tr-1\tsecond",
        "2024-01-01T00:00:00.125Z\tr-1\tunfinished",  # an invocation's end ends its line
    ]


async def test_output_between_invocations_has_no_request_id(
    pipe: tuple[OutputReader, int, Lines],
) -> None:
    reader, write, lines = pipe
    os.write(write, b"loading model\n")
    reader.drain()
    assert lines.lines == ["2024-01-01T00:00:00.125Z\tloading model"]


async def test_a_line_without_end_is_cut_not_buffered_forever(
    pipe: tuple[OutputReader, int, Lines],
) -> None:
    reader, write, lines = pipe
    reader.request_id = "r"
    data = b"x" * (MAX_LINE + 10)
    for start in range(0, len(data), 32 * 1024):  # a pipe holds 64 KB
        os.write(write, data[start : start + 32 * 1024])
        reader._read()
    assert [len(line.split("\t")[2]) for line in lines.lines] == [MAX_LINE]
    reader.drain()
    assert [len(line.split("\t")[2]) for line in lines.lines] == [MAX_LINE, 10]


async def test_undecodable_bytes_are_replaced(pipe: tuple[OutputReader, int, Lines]) -> None:
    reader, write, lines = pipe
    os.write(write, b"caf\xe9\n")
    reader.drain()
    assert lines.lines == ["2024-01-01T00:00:00.125Z\tcaf\ufffd"]


async def test_timestamps_are_utc_with_milliseconds() -> None:
    assert timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert timestamp(1_704_067_200.999) == "2024-01-01T00:00:00.999Z"
