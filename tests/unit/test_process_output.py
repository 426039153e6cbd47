"""An environment's output pipe as function log lines (no process: a pipe written here)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from streamfn.runtime.logs import LEVELS, timestamp
from streamfn.runtime.process.output import MAX_LINE, OutputReader


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.records.append(record)


pytestmark = pytest.mark.anyio


@pytest.fixture
async def pipe() -> AsyncIterator[tuple[OutputReader, int, Lines]]:
    read, write = os.pipe()
    lines = Lines()
    log = logging.getLogger("test.process.output")
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    log.propagate = False
    reader = OutputReader(read, log=log, function="orders")
    yield reader, write, lines
    reader.close()
    os.close(write)
    log.removeHandler(lines)


async def test_lines_are_logged_as_written(pipe: tuple[OutputReader, int, Lines]) -> None:
    reader, write, lines = pipe
    reader.request_id = "r-1"
    powertools = b'{"level":"INFO","message":"x","xray_trace_id":"1-5759e988-bd86"}'
    os.write(write, b"first\tcolumn\nsecond\r\n" + powertools + b"\nunfinished")
    reader.drain()
    assert lines.lines == [
        "first\tcolumn",
        "second",
        powertools.decode(),  # one JSON object, no prefix
        "unfinished",  # an invocation's end ends its line
    ]
    record = lines.records[0]
    assert (record.function, record.request_id) == ("orders", "r-1")  # type: ignore[attr-defined]


async def test_output_between_invocations_has_no_request_id(
    pipe: tuple[OutputReader, int, Lines],
) -> None:
    reader, write, lines = pipe
    os.write(write, b"loading model\n")
    reader.drain()
    assert lines.lines == ["loading model"]
    assert lines.records[0].request_id is None  # type: ignore[attr-defined]


async def test_a_line_without_end_is_cut_not_buffered_forever(
    pipe: tuple[OutputReader, int, Lines],
) -> None:
    reader, write, lines = pipe
    reader.request_id = "r"
    data = b"x" * (MAX_LINE + 10)
    for start in range(0, len(data), 32 * 1024):  # a pipe holds 64 KB
        os.write(write, data[start : start + 32 * 1024])
        reader._read()
    assert [len(line) for line in lines.lines] == [MAX_LINE]
    reader.drain()
    assert [len(line) for line in lines.lines] == [MAX_LINE, 10]


async def test_undecodable_bytes_are_replaced(pipe: tuple[OutputReader, int, Lines]) -> None:
    reader, write, lines = pipe
    os.write(write, b"caf\xe9\n")
    reader.drain()
    assert lines.lines == ["caf\ufffd"]


async def test_timestamps_are_utc_with_milliseconds() -> None:
    assert timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert timestamp(1_704_067_200.999) == "2024-01-01T00:00:00.999Z"


class Echo(logging.Handler):
    """Writes another line into the pipe for every line logged: a writer exactly as fast
    as the reader, so the pipe never runs dry until ``total`` lines have gone through."""

    def __init__(self, write: int, total: int, ticks: list[int]) -> None:
        super().__init__()
        self.write, self.left, self.ticks = write, total, ticks
        self.seen: list[int] = []  # the other task's tick count at each line

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(len(self.ticks))
        self.left -= 1
        if self.left > 0:
            os.write(self.write, b"more\n")
        else:
            os.close(self.write)  # end of input ends the reader's run


async def test_a_writer_as_fast_as_the_reader_does_not_starve_the_event_loop() -> None:
    read, write = os.pipe()
    ticks: list[int] = []
    echo = Echo(write, total=200, ticks=ticks)
    log = logging.getLogger("test.process.output.echo")
    log.addHandler(echo)
    log.setLevel(logging.INFO)
    log.propagate = False
    reader = OutputReader(read, log=log)
    try:
        os.write(write, b"first\n")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:

                async def tick() -> None:
                    while True:
                        ticks.append(1)
                        await anyio.lowlevel.checkpoint()

                tasks.start_soon(tick)
                await reader.run()  # returns at end of input
                tasks.cancel_scope.cancel()
    finally:
        reader.close()
        log.removeHandler(echo)
    assert len(echo.seen) == 200
    # the other task ran while the stream was still flowing, not only after it ended
    assert echo.seen[100] > echo.seen[0]


async def test_json_format_drops_lines_below_the_application_log_level() -> None:
    read, write = os.pipe()
    lines = Lines()
    log = logging.getLogger("test.process.output.levels")
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    log.propagate = False
    reader = OutputReader(read, log=log, min_level=LEVELS["WARN"])
    stamp = '"timestamp": "2024-11-02T16:51:31.587199Z"'
    debug, warn, critical = (
        f'{{"level": "{level}", {stamp}, "msg": "m"}}' for level in ("debug", "WARN", "CRITICAL")
    )
    written = [
        "plain text is INFO",
        debug,
        warn,
        '{"level": "ERROR", "timestamp": "yesterday", "msg": "no RFC 3339 time: INFO"}',
        '{"level": "ERROR", "msg": "no time: INFO"}',
        critical,
        "{not json",
    ]
    try:
        os.write(write, "\n".join(written).encode() + b"\n")
        reader.drain()
    finally:
        reader.close()
        os.close(write)
        log.removeHandler(lines)
    assert lines.lines == [written[2], written[5]]
