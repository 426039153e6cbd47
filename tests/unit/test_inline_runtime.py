"""The in-process runtime: what a handler sees and what the engine gets back.

Handlers are written into a temporary directory per test. Tests that must reach a module's
globals (to hand it an Event or the fake clock) take it from ``sys.modules`` while the
runtime is open.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from streamfn.clock import Clock, SystemClock
from streamfn.config import parse_config
from streamfn.errors import HandlerImportError
from streamfn.policies import runtime_policy
from streamfn.runtime.base import FUNCTION_LOGGER
from streamfn.runtime.inline import InlineRuntime, open_inline_runtime
from streamfn.runtime.policy import RuntimePolicy
from streamfn.testing import FakeClock as _FakeClock
from streamfn.types import InvocationRequest, InvocationResult, Outcome

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def FakeClock() -> _FakeClock:
    return _FakeClock(start=1_580_428_800.0)


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def make_config(
    root: Path, functions: dict[str, dict[str, Any]], *, max_concurrency: int = 4
) -> RuntimePolicy:
    raw = {"service": {"max_concurrency": max_concurrency}, "functions": functions}
    return runtime_policy(parse_config(raw, connectors={}, path=root / "streamfn.toml"))


@asynccontextmanager
async def runtime_for(
    root: Path, handler: str, source: str, *, clock: Clock | None = None, **fields: Any
) -> AsyncIterator[InlineRuntime]:
    """One function ``fn`` whose module (named after ``handler``) holds ``source``."""
    write(root, handler.partition(":")[0].replace(".", "/") + ".py", source)
    config = make_config(root, {"fn": {"handler": handler, **fields}})
    async with open_inline_runtime(config, clock=clock or FakeClock()) as runtime:
        yield runtime


def request(payload: bytes = b"{}", rid: str = "r-1", **fields: Any) -> InvocationRequest:
    return InvocationRequest(function="fn", payload=payload, request_id=rid, **fields)


def module(name: str) -> Any:
    """A handler module loaded by the open runtime, to hand its globals test objects."""
    return sys.modules[name]


def body(result: InvocationResult) -> Any:
    return json.loads(result.payload)


async def test_sync_handler_gets_the_event_in_a_worker_thread(tmp_path: Path) -> None:
    source = """
        import threading
        def handler(event, context):
            main = threading.current_thread() is threading.main_thread()
            return {"got": event, "main_thread": main}
    """
    async with runtime_for(tmp_path, "app:handler", source, memory_size=256) as runtime:
        result = await runtime.invoke(request(b'{"n": 1}'))
        warm = await runtime.invoke(request(b"", rid="r-2"))
    assert result.outcome is Outcome.SUCCESS and result.ok
    assert body(result) == {"got": {"n": 1}, "main_thread": False}
    assert body(warm) == {"got": {}, "main_thread": False}  # empty payload → {}
    assert result.executed_version == "$LATEST"
    assert result.error_type is None
    assert result.report is not None and warm.report is not None
    assert result.report.memory_size_mb == 256
    assert result.report.max_memory_used_mb > 0
    assert result.report.init_duration_ms is not None
    assert warm.report.init_duration_ms is None


async def test_async_handler_is_awaited_on_the_loop(tmp_path: Path) -> None:
    source = """
        import threading, anyio
        async def handler(event, context):
            await anyio.lowlevel.checkpoint()
            return [event["n"] * 2, threading.current_thread() is threading.main_thread()]
    """
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        result = await runtime.invoke(request(b'{"n": 21}'))
    assert body(result) == [42, True]


async def test_async_callables_that_are_not_coroutine_functions(tmp_path: Path) -> None:
    source = """
        import functools
        class Handler:
            async def __call__(self, event, context):
                return "object"
        handler = Handler()
        async def _inner(event, context):
            return "wrapped"
        @functools.wraps(_inner)
        def wrapped(event, context):  # how sync decorators wrap async handlers
            return _inner(event, context)
    """
    write(tmp_path, "app.py", source)
    config = make_config(
        tmp_path, {"obj": {"handler": "app:handler"}, "wrap": {"handler": "app:wrapped"}}
    )
    async with open_inline_runtime(config, clock=FakeClock()) as runtime:
        got = [
            body(await runtime.invoke(InvocationRequest(function=n, payload=b"{}", request_id=n)))
            for n in ("obj", "wrap")
        ]
    assert got == ["object", "wrapped"]


async def test_dotted_module_and_result_encoding(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    source = """
        from decimal import Decimal
        from .helper import KIND
        def handler(event, context):
            if event == "raw":
                return b"not json"
            return None if event == "none" else {"kind": KIND, "price": Decimal("1.50")}
    """
    write(tmp_path, "pkg/helper.py", "KIND = 'pkg'\n")
    async with runtime_for(tmp_path, "pkg.mod:handler", source) as runtime:
        value = await runtime.invoke(request(b'"value"'))
        none = await runtime.invoke(request(b'"none"'))
        raw = await runtime.invoke(request(b'"raw"'))
    assert value.payload == b'{"kind": "pkg", "price": 1.50}'  # AWS's Python runtime's bytes
    assert none.payload == b"null"
    assert raw.payload == b"not json"  # bytes pass through, as on AWS


async def test_context_attributes(tmp_path: Path) -> None:
    source = """
        SEEN = []
        def handler(event, context):
            SEEN.append((context, context.get_remaining_time_in_millis()))
    """
    clock = FakeClock()
    async with runtime_for(tmp_path, "ctx:handler", source, clock=clock, timeout=5) as runtime:
        await runtime.invoke(request(rid="r-1"))
        await runtime.invoke(request(rid="r-2", qualifier="live"))
        seen = module("ctx").SEEN
    (first, remaining), (second, _) = seen
    assert remaining == 5000
    assert first.aws_request_id == "r-1"
    assert first.function_name == "fn"
    assert first.function_version == "$LATEST"
    assert first.invoked_function_arn == "arn:aws:lambda:local:000000000000:function:fn"
    assert second.invoked_function_arn == "arn:aws:lambda:local:000000000000:function:fn:live"
    assert first.memory_limit_in_mb == "128"
    assert first.log_group_name == "/aws/lambda/fn"
    assert re.fullmatch(r"2020/01/31/\[\$LATEST\][0-9a-f]{32}", first.log_stream_name)
    assert second.log_stream_name == first.log_stream_name  # one environment
    assert first.identity.cognito_identity_id is None
    assert first.client_context is None
    clock.step(1.5)
    assert first.get_remaining_time_in_millis() == 3500
    clock.step(10)
    assert first.get_remaining_time_in_millis() == 0


@pytest.mark.parametrize("kind", ["def", "async def"])
async def test_exception_becomes_lambda_error_object(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FUNCTION_LOGGER)
    source = f"""
        {kind} handler(event, context):
            raise KeyError("TABLE_NAME")
    """
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        result = await runtime.invoke(request())
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.error_type == "KeyError"
    error = body(result)
    assert error["errorMessage"] == "'TABLE_NAME'"
    assert error["errorType"] == "KeyError"
    assert error["requestId"] == "r-1"
    # only the handler's frame: the runtime's calling frames are dropped
    assert error["stackTrace"] == [
        f'  File "{tmp_path / "app.py"}", line 3, in handler\n    raise KeyError("TABLE_NAME")\n'
    ]
    messages = [record.getMessage() for record in caplog.records]
    assert messages[1:4] == [
        "[ERROR] KeyError: 'TABLE_NAME'",
        "Traceback (most recent call last):",
        f'  File "{tmp_path / "app.py"}", line 3, in handler',
    ]


@pytest.mark.parametrize(
    ("payload", "error_type", "message"),
    [
        (b"{}", "Runtime.MarshalError", "Unable to marshal response: "),
        (b"{not json", "Runtime.UnmarshalError", "Unable to unmarshal input: "),
    ],
)
async def test_marshalling_errors(
    tmp_path: Path, payload: bytes, error_type: str, message: str
) -> None:
    source = """
        def handler(event, context):
            return object()
    """
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        result = await runtime.invoke(request(payload))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.error_type == error_type
    error = body(result)
    assert error["errorType"] == error_type
    assert error["errorMessage"].startswith(message)
    assert error["stackTrace"] == []


async def test_sys_exit_is_a_crash(tmp_path: Path) -> None:
    source = """
        import sys
        def handler(event, context):
            sys.exit(3)
    """
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        result = await runtime.invoke(request())
    assert result.outcome is Outcome.CRASHED
    assert result.error_type == "Runtime.ExitError"
    assert body(result)["errorMessage"] == (
        "RequestId: r-1 Error: Runtime exited with error: exit status 3"
    )


async def test_start_end_report_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=FUNCTION_LOGGER)
    source = """
        CLOCK = None
        async def handler(event, context):
            CLOCK.step(event)
    """
    clock = FakeClock()
    async with runtime_for(tmp_path, "app:handler", source, clock=clock) as runtime:
        module("app").CLOCK = clock
        await runtime.invoke(request(b"0.01574", rid="r-1"))
        await runtime.invoke(request(b"0.002", rid="r-2"))
    lines = [record.getMessage() for record in caplog.records]
    assert all(record.name == FUNCTION_LOGGER for record in caplog.records)
    memory = r"Max Memory Used: \d+ MB"
    patterns = [
        r"START RequestId: r-1 Version: \$LATEST",
        r"END RequestId: r-1",
        r"REPORT RequestId: r-1\tDuration: 15\.74 ms\tBilled Duration: 16 ms"
        rf"\tMemory Size: 128 MB\t{memory}\tInit Duration: 0\.00 ms",
        r"START RequestId: r-2 Version: \$LATEST",
        r"END RequestId: r-2",
        rf"REPORT RequestId: r-2\tDuration: 2\.00 ms\tBilled Duration: 2 ms"
        rf"\tMemory Size: 128 MB\t{memory}",
    ]
    assert len(lines) == len(patterns)
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), line


async def test_sync_handlers_do_not_block_the_loop(tmp_path: Path) -> None:
    source = """
        STARTED = RELEASE = None
        def handler(event, context):
            STARTED.set()
            return RELEASE.wait(timeout=10)
    """
    started, release = threading.Event(), threading.Event()
    results: list[InvocationResult] = []
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        module("app").STARTED, module("app").RELEASE = started, release

        async def invoke() -> None:
            results.append(await runtime.invoke(request()))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(invoke)
            await anyio.to_thread.run_sync(started.wait)
            release.set()  # the loop runs while the handler blocks its thread
    assert body(results[0]) is True


async def test_timeout_of_a_sync_handler_abandons_its_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FUNCTION_LOGGER)
    source = """
        STARTED = RELEASE = None
        def handler(event, context):
            STARTED.set()
            RELEASE.wait(timeout=10)
    """
    started, release = threading.Event(), threading.Event()
    clock = FakeClock()
    results: list[InvocationResult] = []
    async with runtime_for(tmp_path, "app:handler", source, clock=clock) as runtime:
        module("app").STARTED, module("app").RELEASE = started, release

        async def invoke() -> None:
            results.append(await runtime.invoke(request()))

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(invoke)
                await anyio.to_thread.run_sync(started.wait)
                clock.step(2.5)
                await anyio.wait_all_tasks_blocked()
                assert not results
                clock.step(0.5)
            assert runtime.statistics().abandoned_threads == 1
        finally:
            release.set()
    (result,) = results
    assert result.outcome is Outcome.TIMEOUT
    assert result.error_type == "Sandbox.Timedout"
    assert body(result) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": "RequestId: r-1 Error: Task timed out after 3.00 seconds",
    }
    assert result.report is not None
    assert result.report.timed_out
    assert (result.report.duration_ms, result.report.billed_duration_ms) == (3000, 3000)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[1] == "2020-01-31T00:00:03.000Z r-1 Task timed out after 3.00 seconds"
    assert lines[2] == "END RequestId: r-1"
    assert lines[3].startswith("REPORT RequestId: r-1\tDuration: 3000.00 ms\t")
    assert lines[3].endswith("\tStatus: timeout")


async def test_timeout_cancels_an_async_handler(tmp_path: Path) -> None:
    source = """
        import anyio
        CANCELLED = []
        async def handler(event, context):
            try:
                await anyio.sleep_forever()
            finally:
                CANCELLED.append(context.aws_request_id)
    """
    clock = FakeClock()
    results: list[InvocationResult] = []
    async with runtime_for(tmp_path, "app:handler", source, clock=clock, timeout=1) as runtime:

        async def invoke() -> None:
            results.append(await runtime.invoke(request()))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(invoke)
            await anyio.wait_all_tasks_blocked()
            clock.step(1)
        assert module("app").CANCELLED == ["r-1"]
        assert runtime.statistics().abandoned_threads == 0
    assert results[0].outcome is Outcome.TIMEOUT


async def test_timeout_on_the_real_clock(tmp_path: Path) -> None:
    """The one test that waits: a whole second, the shortest timeout config allows."""
    source = """
        RELEASE = None
        def handler(event, context):
            RELEASE.wait(timeout=10)
    """
    release = threading.Event()
    async with runtime_for(tmp_path, "app:handler", source, clock=SystemClock(), timeout=1) as rt:
        module("app").RELEASE = release
        try:
            with anyio.fail_after(5):
                result = await rt.invoke(request())
        finally:
            release.set()
    assert result.outcome is Outcome.TIMEOUT
    assert result.report is not None
    assert 999 < result.report.duration_ms < 5000  # asyncio may wake a hair early
    init_ms = result.report.init_duration_ms or 0.0  # a cold start bills its init too
    assert result.report.billed_duration_ms == math.ceil(round(1000 + init_ms, 2))


async def test_same_module_name_in_two_code_dirs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path / name, "helpers.py", f"NAME = {name!r}\n")
        write(
            tmp_path / name,
            "lambda_function.py",
            """
            import helpers
            def lambda_handler(event, context):
                return helpers.NAME
            """,
        )
    handler = "lambda_function:lambda_handler"
    config = make_config(
        tmp_path, {"a": {"handler": handler, "code": "a"}, "b": {"handler": handler, "code": "b"}}
    )
    path_before = list(sys.path)
    async with open_inline_runtime(config, clock=FakeClock()) as runtime:
        got = [
            body(await runtime.invoke(InvocationRequest(function=n, payload=b"{}", request_id=n)))
            for n in ("a", "b", "a")
        ]
    assert got == ["a", "b", "a"]
    assert "lambda_function" not in sys.modules and "helpers" not in sys.modules
    assert sys.path == path_before


async def test_a_foreign_module_of_the_same_name_does_not_shadow_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = ModuleType("app")
    monkeypatch.setitem(sys.modules, "app", foreign)
    source = """
        def handler(event, context):
            return "mine"
    """
    async with runtime_for(tmp_path, "app:handler", source) as runtime:
        assert body(await runtime.invoke(request())) == "mine"
        assert sys.modules["app"] is foreign


async def test_reopening_imports_afresh(tmp_path: Path) -> None:
    write(tmp_path, "app.py", "def handler(event, context):\n    return 'one'\n")
    config = make_config(tmp_path, {"fn": {"handler": "app:handler"}})
    async with open_inline_runtime(config, clock=FakeClock()) as runtime:
        assert body(await runtime.invoke(request())) == "one"
    # a different size, so the cached bytecode of the same second is not reused
    write(tmp_path, "app.py", "def handler(event, context):\n    return 'two!'\n")
    async with open_inline_runtime(config, clock=FakeClock()) as runtime:
        result = await runtime.invoke(request())
    assert body(result) == "two!"
    assert result.report is not None and result.report.init_duration_ms is not None


IMPORT_FAILURES: list[tuple[str, str, str, str]] = [
    (
        "nosuch:handler",
        "",
        "Runtime.ImportModuleError",
        "Unable to import module 'nosuch': No module named 'nosuch'",
    ),
    (
        "app:handler",
        "import nosuchdep\n",
        "Runtime.ImportModuleError",
        "Unable to import module 'app': No module named 'nosuchdep'",
    ),
    ("app:nope", "x = 1\n", "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'app'"),
    (
        "app:VALUE",
        "VALUE = 1\n",
        "Runtime.HandlerNotFound",
        "Handler 'VALUE' on module 'app' is not callable",
    ),
    ("app:handler", "import os\nos.environ['NO_SUCH_VARIABLE_X']\n", "KeyError", "'NO_SUCH"),
    ("app:handler", "def handler(:\n", "Runtime.UserCodeSyntaxError", "Syntax error in module"),
]


@pytest.mark.parametrize(("handler", "source", "error_type", "message"), IMPORT_FAILURES)
async def test_import_problems_are_raised_at_open(
    tmp_path: Path, handler: str, source: str, error_type: str, message: str
) -> None:
    write(tmp_path, "app.py", source)
    good = tmp_path / "good"
    write(good, "ok.py", "def handler(event, context):\n    return 1\n")
    config = make_config(
        tmp_path, {"first": {"handler": "ok:handler", "code": "good"}, "fn": {"handler": handler}}
    )
    path_before = list(sys.path)
    with pytest.raises(HandlerImportError) as caught:
        async with open_inline_runtime(config, clock=FakeClock()):
            pytest.fail("opened")  # pragma: no cover
    assert caught.value.error_type == error_type
    assert caught.value.handler == handler
    assert handler in str(caught.value)
    assert message in str(caught.value)
    assert "ok" not in sys.modules and "app" not in sys.modules
    assert sys.path == path_before


@pytest.mark.parametrize(("handler", "source", "error_type", "message"), IMPORT_FAILURES)
async def test_not_strict_a_broken_handler_fails_only_its_invocations(
    tmp_path: Path,
    handler: str,
    source: str,
    error_type: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(tmp_path, "app.py", source)
    good = tmp_path / "good"
    write(good, "ok.py", "def handler(event, context):\n    return 1\n")
    config = make_config(
        tmp_path, {"first": {"handler": "ok:handler", "code": "good"}, "fn": {"handler": handler}}
    )
    with caplog.at_level(logging.ERROR, logger="streamfn.runtime"):
        async with open_inline_runtime(config, clock=FakeClock(), strict=False) as runtime:
            ok = await runtime.invoke(
                InvocationRequest(function="first", payload=b"{}", request_id="ok")
            )
            failed = [
                await runtime.invoke(
                    InvocationRequest(function="fn", payload=b"{}", request_id=f"r{i}")
                )
                for i in range(2)
            ]
    assert ok.outcome is Outcome.SUCCESS and body(ok) == 1
    for i, result in enumerate(failed):
        assert result.outcome is Outcome.FUNCTION_ERROR
        error = json.loads(result.payload)
        assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
        assert error["errorType"] == error_type and result.error_type == error_type
        assert message in error["errorMessage"]
        assert error["requestId"] == f"r{i}"
    startup = [r.getMessage() for r in caplog.records if r.name == "streamfn.runtime"]
    assert len(startup) == 1  # once, at open; not per invocation
    assert f"function 'fn': handler '{handler}'" in startup[0] and error_type in startup[0]


async def test_unknown_function_is_a_caller_bug(tmp_path: Path) -> None:
    async with runtime_for(tmp_path, "app:handler", "def handler(e, c):\n    pass\n") as rt:
        with pytest.raises(LookupError):
            await rt.invoke(InvocationRequest(function="other", payload=b"{}", request_id="r"))
