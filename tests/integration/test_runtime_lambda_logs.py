"""The ``python`` runtime as AWS's Python runtime: handler strings, log bytes, trace ids.

Real worker processes; handlers in ``runtime_handlers/`` (``log_text.py``, ``log_json.py``,
``log_powertools.py``, ``lambda_function.py``, ``nested/deep/forms.py``). The functions are
given to the runtime as :class:`~streamfn.runtime.policy.FunctionSpec` values, its input.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamfn.clock import SystemClock
from streamfn.runtime.base import Runtime
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.runtime.router import open_runtime
from streamfn.types import InvocationRequest, InvocationResult

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

HANDLERS = Path(__file__).parent / "runtime_handlers"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TRACE_ID = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]")


@pytest.fixture(autouse=True)
def _no_child_left(no_child_left: None) -> None:
    """Every test here checks that the runtime leaves no process behind."""


@asynccontextmanager
async def running(**functions: dict[str, Any]) -> AsyncIterator[Runtime]:
    specs = {
        name: FunctionSpec(name=name, code_dir=HANDLERS, memory_size=512, **fields)
        for name, fields in functions.items()
    }
    async with open_runtime(RuntimePolicy(functions=specs), clock=SystemClock()) as runtime:
        yield runtime


_ids = iter(range(1_000_000))


async def call(
    runtime: Runtime, function: str, event: Any = None, **fields: Any
) -> tuple[Any, InvocationResult]:
    request = InvocationRequest(
        function=function,
        payload=msgspec.json.encode(event or {}),
        request_id=f"log-{next(_ids)}",
        **fields,
    )
    result = await runtime.invoke(request)
    return msgspec.json.decode(result.payload), result


def between(lines: list[str], first: str, last: str) -> list[str]:
    return lines[lines.index(first) + 1 : lines.index(last)]


@pytest.mark.parametrize(
    ("handler", "module"),
    [
        ("lambda_function.lambda_handler", "lambda_function"),
        ("nested.deep.forms.fn", "nested.deep.forms"),
        ("nested/deep/forms.fn", "nested.deep.forms"),
        ("nested.deep.forms:fn", "nested.deep.forms"),
    ],
)
async def test_each_handler_form_runs_and_is_handed_on_as_HANDLER(
    handler: str, module: str
) -> None:
    async with running(f={"handler": handler}) as runtime:
        body, result = await call(runtime, "f")
    assert result.ok, body
    assert body["module"] == module
    assert body["handler"] == handler.replace(":", ".")  # module:fn shown in AWS's form


async def test_print_and_logging_are_written_as_the_python_runtime_writes_them(
    lines: list[str],
) -> None:
    async with running(f={"handler": "log_text.handler"}) as runtime:
        body, result = await call(runtime, "f", {"n": 1})
    assert result.ok, body
    rid = result.request_id
    output = between(lines, f"START RequestId: {rid} Version: $LATEST", f"END RequestId: {rid}")
    assert output[:2] == ["printed\twith a tab", "to stderr"]  # as written: no prefix
    expected = [
        ("INFO", "info 1"),
        ("WARNING", "warned"),
        ("ERROR", "failed"),
        ("INFO", "from a child logger"),  # debug lines stay below the level set
    ]
    assert len(output) == 2 + len(expected), output
    for line, (level, message) in zip(output[2:], expected, strict=True):
        assert re.fullmatch(rf"\[{level}\]\t{STAMP}\t{rid}\t{re.escape(message)}", line), line


async def test_json_log_format_makes_records_and_platform_lines_json(lines: list[str]) -> None:
    function = {"handler": "log_json.handler", "log_format": "JSON"}
    async with running(f=function) as runtime:
        _, ok = await call(runtime, "f")
        error, failed = await call(runtime, "f", {"fail": True})
    records = [json.loads(line) for line in lines if line.startswith("{")]
    mine = [r for r in records if r.get("requestId") == ok.request_id]
    assert [(r["level"], r["message"], r["logger"]) for r in mine] == [
        ("INFO", "info", "root"),  # application log level INFO: debug dropped
        ("WARNING", "hello x", "my.logger"),
        ("INFO", {"a": 1}, "root"),
        ("ERROR", "boom", "root"),
    ]
    assert mine[1]["custom"] == "extra-field"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", mine[0]["timestamp"])
    assert mine[3]["errorType"] == "ZeroDivisionError"
    assert mine[3]["errorMessage"] == "division by zero"
    assert "log_json.py" in mine[3]["stackTrace"][0]
    assert "plain print" in lines  # print() stays plain text
    platform = [r for r in records if "type" in r]
    assert [(r["type"], r["record"]["requestId"]) for r in platform] == [
        ("platform.start", ok.request_id),
        ("platform.report", ok.request_id),
        ("platform.start", failed.request_id),
        ("platform.report", failed.request_id),
    ]
    report = platform[1]["record"]
    assert report["status"] == "success"
    assert set(report["metrics"]) == {
        "durationMs",
        "billedDurationMs",
        "memorySizeMB",
        "maxMemoryUsedMB",
        "initDurationMs",
    }
    assert platform[3]["record"]["status"] == "error"
    assert platform[3]["record"]["errorType"] == "ValueError"
    unhandled = next(r for r in records if r.get("errorMessage") == "bad")
    assert (unhandled["level"], unhandled["errorType"]) == ("ERROR", "ValueError")
    assert unhandled["requestId"] == failed.request_id == error["requestId"]
    assert not any(line.startswith(("START", "END", "REPORT")) for line in lines)


async def test_json_log_levels_filter_application_and_platform_lines(lines: list[str]) -> None:
    function = {
        "handler": "log_json.handler",
        "log_format": "JSON",
        "application_log_level": "WARN",
        "system_log_level": "WARN",
    }
    async with running(f=function) as runtime:
        _, result = await call(runtime, "f")
    assert result.ok
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["level"], r["message"]) for r in records] == [
        ("WARNING", "hello x"),
        ("ERROR", "boom"),
    ]
    assert "plain print" not in lines  # plain text is INFO


async def test_every_invocation_has_a_trace_id_and_powertools_logs_it(lines: list[str]) -> None:
    caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    async with running(f={"handler": "log_powertools.handler"}) as runtime:
        first, one = await call(runtime, "f", {"n": 1})
        second, _ = await call(runtime, "f", {"n": 2})
        traced, three = await call(runtime, "f", {"n": 3}, trace_context=caller)
    assert TRACE_ID.fullmatch(first["trace"]) and TRACE_ID.fullmatch(second["trace"])
    assert first["trace"] != second["trace"]
    assert traced["trace"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793;")
    assert traced["trace"].endswith(";Sampled=1")
    rid = one.request_id
    output = between(lines, f"START RequestId: {rid} Version: $LATEST", f"END RequestId: {rid}")
    assert len(output) == 1  # one JSON object on one line
    record = json.loads(output[0])
    assert record["message"] == "hello powertools" and record["n"] == 1
    assert record["xray_trace_id"] == first["trace"].split(";")[0].removeprefix("Root=")
    assert record["function_request_id"] == rid
    rid = three.request_id
    [line] = between(lines, f"START RequestId: {rid} Version: $LATEST", f"END RequestId: {rid}")
    assert json.loads(line)["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
