"""``logging`` in handlers of the inline runtime: Lambda's lines in the function log, and
the engine's own handlers left out of it."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.testing import FakeClock
from streamfn.types import InvocationRequest

pytestmark = pytest.mark.anyio

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

SOURCE = """
    import logging
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    def handler(event, context):
        logger.info("info %s", event["n"])
        logger.debug("below the level")
        logging.getLogger("my.module").warning("warned")
        logging.basicConfig(level=logging.DEBUG)  # a no-op: the root logger has handlers
        logger.debug("still below the level")
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("boom")
        return "ok"
"""


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine_and_function() -> Iterator[tuple[Capture, Capture, logging.Logger]]:
    """A handler of the engine's on the root logger, and the function log."""
    root = logging.getLogger()
    level = root.level
    engine, function = Capture(), Capture()
    log = logging.getLogger("test.inline.functions")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(function)
    root.addHandler(engine)
    yield engine, function, log
    root.removeHandler(engine)
    log.removeHandler(function)
    root.setLevel(level)  # the handler module set it: the root logger is shared


async def run(tmp_path: Path, log: logging.Logger, **fields: Any) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(SOURCE), encoding="utf-8")
    spec = FunctionSpec(
        name="fn", handler="app.handler", code_dir=tmp_path, runtime="inline", **fields
    )
    policy = RuntimePolicy(functions={"fn": spec})
    async with open_inline_runtime(policy, clock=FakeClock(), log=log) as runtime:
        request = InvocationRequest(function="fn", payload=b'{"n": 1}', request_id="r-1")
        result = await runtime.invoke(request)
        logging.getLogger("engine.part").warning("between invocations")
    assert result.ok


async def test_logging_in_a_handler_writes_lambdas_text_lines(
    tmp_path: Path, engine_and_function: tuple[Capture, Capture, logging.Logger]
) -> None:
    engine, function, log = engine_and_function
    await run(tmp_path, log)
    lines = function.lines
    assert lines[0] == "START RequestId: r-1 Version: $LATEST"
    assert re.fullmatch(rf"\[INFO\]\t{STAMP}\tr-1\tinfo 1", lines[1]), lines[1]
    assert re.fullmatch(rf"\[WARNING\]\t{STAMP}\tr-1\twarned", lines[2]), lines[2]
    assert re.fullmatch(rf"\[ERROR\]\t{STAMP}\tr-1\tboom", lines[3]), lines[3]
    assert lines[4] == "Traceback (most recent call last):"  # the exception, one line each
    assert lines[-2:][0] == "END RequestId: r-1" and lines[-1].startswith("REPORT RequestId: r-1")
    assert not any("below the level" in line for line in lines)
    # the engine's handler saw none of the handler's records, and still sees its own
    assert engine.lines == ["between invocations"]


async def test_json_log_format_in_the_inline_runtime(
    tmp_path: Path, engine_and_function: tuple[Capture, Capture, logging.Logger]
) -> None:
    _, function, log = engine_and_function
    await run(tmp_path, log, log_format="JSON", application_log_level="WARN")
    records = [json.loads(line) for line in function.lines]
    assert [r.get("type") for r in records] == [
        "platform.start",
        None,
        None,
        "platform.report",
    ]
    warned, boom = records[1], records[2]
    assert {k: warned[k] for k in ("level", "message", "logger", "requestId")} == {
        "level": "WARNING",
        "message": "warned",
        "logger": "my.module",
        "requestId": "r-1",
    }
    assert (boom["errorType"], boom["errorMessage"]) == ("ZeroDivisionError", "division by zero")
    assert records[3]["record"]["status"] == "success"
    assert records[3]["time"].endswith("Z")
