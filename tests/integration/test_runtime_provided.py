"""``runtime = "provided"``: bootstraps speaking the Lambda Runtime API to the engine.

Three bootstraps under ``runtime_handlers/``: AWS's custom-runtime tutorial in bash with
curl (``provided_shell``), AWS's runtime interface client ``awslambdaric``
(``provided_ric``), and a Python probe of the API's edges (``provided_api``). They are
copied to a temporary directory first, so their executable bit does not depend on how the
repository was checked out.
"""

from __future__ import annotations

import re
import shutil
import stat
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamfn.clock import SystemClock
from streamfn.errors import HandlerImportError
from streamfn.runtime.base import Runtime
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.runtime.router import open_runtime
from streamfn.types import InvocationRequest, InvocationResult, Outcome

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the shell bootstrap needs curl"),
]

HANDLERS = Path(__file__).parent / "runtime_handlers"
TRACE_ID = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]")


@pytest.fixture(autouse=True)
def _no_child_left(no_child_left: None) -> None:
    """Every test here checks that the runtime leaves no process behind."""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """The bootstraps and handlers, copied with their executable bits set."""
    target = tmp_path / "code"
    shutil.copytree(HANDLERS, target, ignore=shutil.ignore_patterns("__pycache__"))
    for bootstrap in target.glob("*/bootstrap"):
        bootstrap.chmod(bootstrap.stat().st_mode | stat.S_IXUSR)
    return target


@asynccontextmanager
async def running(code: Path, functions: dict[str, dict[str, Any]]) -> AsyncIterator[Runtime]:
    """The functions as the runtime takes them (a ``provided`` handler is free-form)."""
    specs = {}
    for name, fn in functions.items():
        fields = dict(fn)
        code_dir = code / fields.pop("code")
        bootstrap = code_dir / fields.pop("bootstrap", "bootstrap")
        specs[name] = FunctionSpec(
            name=name, code_dir=code_dir, runtime="provided", bootstrap=bootstrap, **fields
        )
    policy = RuntimePolicy(functions=specs)
    async with open_runtime(policy, clock=SystemClock()) as runtime:
        yield runtime


_ids = iter(range(1_000_000))


async def call(runtime: Runtime, function: str, event: Any) -> tuple[Any, InvocationResult]:
    request = InvocationRequest(
        function=function, payload=msgspec.json.encode(event), request_id=f"rq-{next(_ids)}"
    )
    result = await runtime.invoke(request)
    return msgspec.json.decode(result.payload), result


def report_of(lines: list[str], result: InvocationResult) -> str:
    return next(line for line in lines if line.startswith(f"REPORT RequestId: {result.request_id}"))


async def test_the_tutorials_shell_bootstrap_with_curl(code: Path, lines: list[str]) -> None:
    functions = {"echo": {"handler": "function.handler", "code": "provided_shell"}}
    async with running(code, functions) as runtime:
        first, cold = await call(runtime, "echo", {"n": 1})
        second, warm = await call(runtime, "echo", {"n": 2})
    assert cold.ok and warm.ok
    assert first["echo"] == {"n": 1} and second["echo"] == {"n": 2}
    assert first["pid"] == second["pid"]  # one bootstrap process serves both
    assert first["tmp"].startswith(tempfile_root())
    assert "Init Duration" in report_of(lines, cold)
    assert "Init Duration" not in report_of(lines, warm)
    start = lines.index(f"START RequestId: {cold.request_id} Version: $LATEST")
    end = lines.index(f"END RequestId: {cold.request_id}")
    assert lines[start + 1 : end] == ['handling {"n":1}']  # stderr as written, no prefix


async def test_a_timed_out_bootstrap_is_killed_and_replaced(code: Path, lines: list[str]) -> None:
    functions = {
        "slow": {"handler": "function.slow", "code": "provided_shell", "timeout": 1},
    }
    async with running(code, functions) as runtime:
        started = time.monotonic()
        body, result = await call(runtime, "slow", {})
        assert time.monotonic() - started < 5
        _, again = await call(runtime, "slow", {})
    assert result.outcome is Outcome.TIMEOUT and again.outcome is Outcome.TIMEOUT
    assert body["errorType"] == "Sandbox.Timedout"
    assert report_of(lines, result).endswith("Status: timeout")
    assert "Init Duration" in report_of(lines, again)  # a fresh environment


async def test_awslambdaric_as_the_bootstrap(code: Path) -> None:
    environment = {"PYTHON": sys.executable}
    functions = {
        "ric": {
            "handler": "ric_handler.handler",
            "code": "provided_ric",
            "environment": environment,
        },
        "fails": {
            "handler": "ric_handler.fail",
            "code": "provided_ric",
            "environment": environment,
        },
    }
    async with running(code, functions) as runtime:
        body, result = await call(runtime, "ric", {"order": 7})
        again, _ = await call(runtime, "ric", {"order": 8})
        error, failed = await call(runtime, "fails", {})
    assert result.ok
    assert body["event"] == {"order": 7} and body["function_name"] == "ric"
    assert body["request_id"] == result.request_id
    assert 0 < body["remaining_ms"] <= 3000
    assert again["pid"] == body["pid"]
    assert failed.outcome is Outcome.FUNCTION_ERROR and failed.error_type == "ValueError"
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "bad input"


async def test_init_errors_posted_by_the_runtime_fail_the_start(code: Path) -> None:
    functions = {
        "missing": {
            "handler": "no_such_module.handler",
            "code": "provided_ric",
            "environment": {"PYTHON": sys.executable},
        }
    }
    with pytest.raises(HandlerImportError) as caught:
        async with running(code, functions):
            pass
    assert caught.value.error_type == "Runtime.ImportModuleError"


async def test_a_bootstrap_that_cannot_run_fails_the_start(code: Path) -> None:
    functions = {"none": {"handler": "x:y", "code": "provided_shell", "bootstrap": "nothing"}}
    with pytest.raises(HandlerImportError) as caught:
        async with running(code, functions):
            pass
    assert caught.value.error_type == "Runtime.InvalidEntrypoint"


async def test_the_runtime_api_answers_like_lambdas(code: Path) -> None:
    functions = {"probe": {"handler": "probe:handler", "code": "provided_api", "timeout": 5}}
    async with running(code, functions) as runtime:
        before = int(time.time() * 1000)
        seen, result = await call(runtime, "probe", {"hello": "world"})
        error, failed = await call(runtime, "probe", {"fail": True})
    assert result.ok, seen
    assert seen["event"] == {"hello": "world"} and seen["next_status"] == 200
    assert before + 4000 <= seen["deadline_ms"] <= before + 6000  # epoch ms, timeout ahead
    assert seen["arn"] == "arn:aws:lambda:local:000000000000:function:probe"
    assert (seen["unknown_id"], seen["unknown_path"]) == (400, 404)
    assert failed.outcome is Outcome.FUNCTION_ERROR and failed.error_type == "Custom.Failure"
    assert error == {"errorMessage": "asked to fail", "errorType": "Custom.Failure"}


@pytest.mark.parametrize("handler", ["main", "function.handler", "bootstrap", "a:b"])
async def test_a_free_form_handler_reaches_the_bootstrap_unchanged(
    code: Path, handler: str
) -> None:
    functions = {"probe": {"handler": handler, "code": "provided_api"}}
    async with running(code, functions) as runtime:
        seen, result = await call(runtime, "probe", {})
    assert result.ok, seen
    assert seen["handler"] == handler
    assert seen["runtime_dir"] == str(code / "provided_api")


async def test_next_carries_a_trace_id_that_continues_the_callers(code: Path) -> None:
    functions = {"probe": {"handler": "probe.handler", "code": "provided_api"}}
    caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    async with running(code, functions) as runtime:
        fresh, _ = await call(runtime, "probe", {})
        request = InvocationRequest(
            function="probe", payload=b"{}", request_id="rq-traced", trace_context=caller
        )
        continued = msgspec.json.decode((await runtime.invoke(request)).payload)
    assert TRACE_ID.fullmatch(fresh["trace"]) and fresh["trace"].endswith("Sampled=0")
    assert TRACE_ID.fullmatch(continued["trace"])
    assert continued["trace"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=")
    assert "Parent=53995c3f42cd8ad8" not in continued["trace"]  # the function's own segment
    assert continued["trace"].endswith(";Sampled=1")


async def test_a_response_over_6_mb_fails_the_invocation_as_on_aws(code: Path) -> None:
    functions = {"probe": {"handler": "probe.handler", "code": "provided_api", "timeout": 30}}
    async with running(code, functions) as runtime:
        started = time.monotonic()
        error, result = await call(runtime, "probe", {"big": True})
        assert time.monotonic() - started < 10  # ended by the post, not by the timeout
        again, after = await call(runtime, "probe", {})
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.error_type == error["errorType"] == "Function.ResponseSizeTooLarge"
    assert "(6291556 bytes)" in error["errorMessage"]
    assert after.ok and again["next_status"] == 200  # the environment goes on


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()
