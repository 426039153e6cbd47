"""The invocation envelope every runtime writes: the lines, their order, the result."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streamfn.runtime import envelope
from streamfn.runtime.invocation import Ended
from streamfn.types import Outcome

LOG = logging.getLogger("test.envelope")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler = Lines()
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    yield handler.lines
    LOG.removeHandler(handler)


def test_a_timeout_logs_aws_line_then_end_and_report(lines: list[str]) -> None:
    envelope.start(LOG, "r-1")
    ended = envelope.timed_out(LOG, "r-1", 3, now=1_704_067_200.5)
    result = envelope.finish(
        LOG,
        "r-1",
        ended,
        duration_ms=3004.2,
        memory_size_mb=128,
        max_memory_used_mb=20,
        init_duration_ms=None,
        timeout=3,
    )
    assert lines == [
        "START RequestId: r-1 Version: $LATEST",
        "2024-01-01T00:00:00.500Z r-1 Task timed out after 3.00 seconds",
        "END RequestId: r-1",
        "REPORT RequestId: r-1\tDuration: 3004.20 ms\tBilled Duration: 3000 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 20 MB\tStatus: timeout",
    ]
    assert result.outcome is Outcome.TIMEOUT and result.error_type == "Sandbox.Timedout"
    assert result.report is not None and result.report.timed_out
    assert result.executed_version == "$LATEST"


def test_an_error_object_is_logged_before_end(lines: list[str]) -> None:
    error = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
    ended = Ended(Outcome.FUNCTION_ERROR, b"{}", "ValueError", error)
    result = envelope.finish(
        LOG,
        "r-2",
        ended,
        duration_ms=1.5,
        memory_size_mb=256,
        max_memory_used_mb=30,
        init_duration_ms=12.25,
        timeout=3,
    )
    assert lines == [
        "[ERROR] ValueError: boom",
        "Traceback (most recent call last):",
        "END RequestId: r-2",
        "REPORT RequestId: r-2\tDuration: 1.50 ms\tBilled Duration: 14 ms\tMemory Size: 256 MB"
        "\tMax Memory Used: 30 MB\tInit Duration: 12.25 ms",
    ]
    assert result.error_type == "ValueError" and result.payload == b"{}"
    assert result.report is not None and not result.report.timed_out
