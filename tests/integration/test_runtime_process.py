"""The ``python`` runtime: real worker processes, driven through open_runtime and Invoker.

Handlers live in ``runtime_handlers/lifecycle.py``; each returns what its test checks (its
pid, a module-level counter, its environment). After every test no child process of the
test process may remain — not the template, not a worker, not a zombie.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import streamfn.runtime
from streamfn.clock import SystemClock
from streamfn.config import Config, parse_config
from streamfn.errors import HandlerImportError
from streamfn.invoke.invoker import Invoker
from streamfn.policies import invoker_policy, runtime_policy
from streamfn.runtime.base import Runtime
from streamfn.runtime.process import ProcessRuntime
from streamfn.runtime.process.pool import ProcessRuntimeStatistics
from streamfn.runtime.router import RoutingRuntime, open_runtime
from streamfn.types import InvocationRequest, InvocationResult, Outcome

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

HANDLERS = Path(__file__).parent / "runtime_handlers"
RUNTIME_DIR = str(Path(streamfn.runtime.__file__).resolve().parent)
TRACE_ID = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")


@pytest.fixture(autouse=True)
def _no_child_left(no_child_left: None) -> None:
    """Every test here checks that the runtime leaves no process behind."""


def alive(pid: int) -> bool:
    return exists(f"/proc/{pid}")


def exists(path: str) -> bool:
    return Path(path).exists()


async def gone(pid: int, within: float = 5.0) -> None:
    """Wait until process ``pid`` no longer exists (polling /proc: there is no event)."""
    with anyio.fail_after(within):
        while alive(pid):  # noqa: ASYNC110
            await anyio.sleep(0.02)


def make_config(tmp_path: Path, functions: dict[str, dict[str, Any]], **service: Any) -> Config:
    raw = {
        "service": {"max_concurrency": 8, **service},
        "functions": {name: {"code": str(HANDLERS), **fn} for name, fn in functions.items()},
    }
    return parse_config(raw, connectors={}, path=tmp_path / "streamfn.toml")


@asynccontextmanager
async def running(tmp_path: Path, functions: dict[str, dict[str, Any]]) -> AsyncIterator[Runtime]:
    async with open_runtime(
        runtime_policy(make_config(tmp_path, functions)), clock=SystemClock()
    ) as runtime:
        yield runtime


_ids = iter(range(1_000_000))


async def call(runtime: Runtime | Invoker, function: str, event: Any = None, **kw: Any) -> Any:
    """Invoke; the decoded payload and the result."""
    request = InvocationRequest(
        function=function,
        payload=msgspec.json.encode(event if event is not None else {}),
        request_id=f"req-{next(_ids)}",
    )
    if isinstance(runtime, Invoker):
        result = await runtime.invoke(request, **kw)
    else:
        result = await runtime.invoke(request)
    return msgspec.json.decode(result.payload), result


def runtime_statistics(runtime: Runtime) -> ProcessRuntimeStatistics:
    """The process runtime's statistics behind the router (the one runtime of the test)."""
    assert isinstance(runtime, RoutingRuntime)
    process = next(r for r in runtime.routes.values() if isinstance(r, ProcessRuntime))
    return process.statistics()


async def until(
    runtime: Runtime, condition: Callable[[ProcessRuntimeStatistics], bool], within: float = 5.0
) -> None:
    """Wait until the process runtime's statistics satisfy ``condition`` (polled: the
    runtime has no event for it)."""
    with anyio.fail_after(within):
        while not condition(runtime_statistics(runtime)):  # noqa: ASYNC110
            await anyio.sleep(0.01)


def report_of(lines: list[str], result: InvocationResult) -> str:
    return next(line for line in lines if line.startswith(f"REPORT RequestId: {result.request_id}"))


async def test_cold_then_warm_reuses_the_environment_and_logs_like_lambda(
    tmp_path: Path, lines: list[str]
) -> None:
    async with running(tmp_path, {"orders": {"handler": "lifecycle:state"}}) as runtime:
        first, cold = await call(runtime, "orders")
        second, warm = await call(runtime, "orders")
    assert cold.ok and warm.ok
    assert (first["pid"], first["count"]) == (second["pid"], 1)
    assert second["count"] == 2  # module state persists while warm
    assert first["pid"] != os.getpid()
    assert "\tInit Duration: " in report_of(lines, cold)
    assert "Init Duration" not in report_of(lines, warm)
    assert cold.report is not None and cold.report.init_duration_ms is not None
    assert warm.report is not None and warm.report.init_duration_ms is None
    rid = cold.request_id
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    end = lines.index(f"END RequestId: {rid}")
    assert lines[start + 1 : end] == [
        f"invocation 1 of {first['pid']}",  # as written, as AWS's Python runtime leaves it
        "second line",  # stderr, same stream
    ]
    assert lines[end + 1] == report_of(lines, cold)
    fields = report_of(lines, cold).split("\t")
    assert fields[1].startswith("Duration: ") and fields[3] == "Memory Size: 128 MB"
    assert re.fullmatch(r"Max Memory Used: \d+ MB", fields[4])
    assert not alive(first["pid"])


async def test_environment_variables_are_lambdas_not_the_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFN_TEST_SECRET", "hunter2")
    monkeypatch.setenv("STREAMFN_TEST_SHARED", "passed on")
    function = {
        "handler": "lifecycle:state",
        "memory_size": 256,
        "timeout": 7,
        "environment": {"TABLE": "orders"},
        "inherit_environment": ["STREAMFN_TEST_SHARED"],
    }
    async with running(tmp_path, {"orders": function}) as runtime:
        seen, _ = await call(runtime, "orders")
    environ = seen["environ"]
    assert "STREAMFN_TEST_SECRET" not in environ
    assert "hunter2" not in repr(environ)
    assert environ["STREAMFN_TEST_SHARED"] == "passed on"
    assert environ["TABLE"] == "orders"
    assert environ["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert environ["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert environ["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
    assert environ["AWS_LAMBDA_LOG_STREAM_NAME"] == seen["log_stream"]
    assert environ["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert environ["AWS_REGION"] == "local"
    assert environ["_HANDLER"] == "lifecycle.state"
    assert environ["LAMBDA_TASK_ROOT"] == str(HANDLERS)
    assert environ["TZ"] == ":UTC"
    assert environ["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert environ["LAMBDA_RUNTIME_DIR"] == RUNTIME_DIR
    assert TRACE_ID.fullmatch(environ["_X_AMZN_TRACE_ID"])
    assert "AWS_LAMBDA_LOG_FORMAT" not in environ and "AWS_LAMBDA_LOG_LEVEL" not in environ
    assert environ["TMPDIR"] == seen["tmpdir"]
    assert seen["memory"] == "256"
    assert 6000 < seen["remaining_ms"] <= 7000
    assert seen["arn"] == "arn:aws:lambda:local:000000000000:function:orders"
    assert not exists(seen["tmpdir"])  # deleted with the environment


async def test_module_state_is_per_environment(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(tmp_path, {"f": {"handler": "lifecycle:state"}}) as runtime,
        anyio.create_task_group() as tasks,
    ):

        async def one() -> None:
            seen.append((await call(runtime, "f", {"seconds": 0.3}))[0])

        tasks.start_soon(one)
        tasks.start_soon(one)
    assert len({s["pid"] for s in seen}) == 2
    assert [s["count"] for s in seen] == [1, 1]


async def test_timeout_kills_the_environment_and_the_next_call_gets_a_fresh_one(
    tmp_path: Path, lines: list[str]
) -> None:
    async with running(tmp_path, {"slow": {"handler": "lifecycle:sleep", "timeout": 1}}) as runtime:
        before, _ = await call(runtime, "slow", {"seconds": 0})
        body, result = await call(runtime, "slow", {"seconds": 30})
        assert not alive(before["pid"])
        after, fresh = await call(runtime, "slow", {"seconds": 0})
    assert result.outcome is Outcome.TIMEOUT and result.error_type == "Sandbox.Timedout"
    assert body == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds",
    }
    assert report_of(lines, result).endswith("\tStatus: timeout")
    assert result.report is not None and result.report.billed_duration_ms == 1000
    assert fresh.ok and after["pid"] != before["pid"] and after["count"] == 1
    assert "Init Duration" in report_of(lines, fresh)


async def test_memory_size_is_enforced_in_the_environment_not_the_engine(tmp_path: Path) -> None:
    async with running(tmp_path, {"hog": {"handler": "lifecycle:hog"}}) as runtime:
        engine_before = _rss_kb()
        body, result = await call(runtime, "hog", {"mb": 300})
        engine_after = _rss_kb()
        _, fine = await call(runtime, "hog", {"mb": 40})
    assert result.outcome is Outcome.CRASHED
    assert result.error_type == body["errorType"] == "Runtime.OutOfMemory"
    assert engine_after - engine_before < 20 * 1024  # the engine's memory stays flat
    assert fine.ok and fine.report is not None
    assert fine.report.max_memory_used_mb >= 40  # the worker's peak RSS
    assert fine.report.init_duration_ms is not None  # the failed environment was replaced


async def test_tmp_is_private_limited_and_persists_while_warm(tmp_path: Path) -> None:
    functions = {
        "fill": {"handler": "lifecycle:fill"},
        "other": {"handler": "lifecycle:listing"},
    }
    async with running(tmp_path, functions) as runtime:
        body, full = await call(runtime, "fill", {"mb": 520})  # ephemeral_storage = 512
        first, _ = await call(runtime, "fill", {"mb": 1, "name": "a.bin"})
        second, _ = await call(runtime, "fill", {"mb": 1, "name": "b.bin"})
        elsewhere, _ = await call(runtime, "other")
    assert full.outcome is Outcome.FUNCTION_ERROR and full.error_type == "OSError"
    codes = (f"[Errno {errno.ENOSPC}]", f"[Errno {errno.EFBIG}]")
    assert body["errorMessage"].startswith(codes), body
    assert first["pid"] == second["pid"] and first["tmpdir"] == second["tmpdir"]
    assert second["files"] == ["a.bin", "b.bin"]  # kept while the environment is warm
    assert elsewhere["files"] == []  # another environment has its own /tmp
    assert first["tmpdir"] != tempfile.gettempdir()
    assert not exists(first["tmpdir"])  # deleted with the environment


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("os._exit", "exit status 3"),
        ("segfault", "signal: segmentation fault"),
        ("sys.exit", "exit status 2"),
    ],
)
async def test_a_dying_handler_fails_its_invocation_only(
    tmp_path: Path, how: str, reason: str
) -> None:
    async with running(tmp_path, {"f": {"handler": "lifecycle:exit_"}}) as runtime:
        before, _ = await call(runtime, "f", {"how": "nothing"})
        body, result = await call(runtime, "f", {"how": how})
        after, fine = await call(runtime, "f", {"how": "nothing"})
    assert result.outcome is Outcome.CRASHED and result.error_type == "Runtime.ExitError"
    assert body["errorMessage"] == (
        f"RequestId: {result.request_id} Error: Runtime exited with error: {reason}"
    )
    assert fine.ok and after["pid"] != before["pid"]


async def test_reserved_concurrency_throttles_direct_calls_and_queues_waiting_ones(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, {"f": {"handler": "lifecycle:sleep", "reserved_concurrency": 2}})
    async with open_runtime(runtime_policy(config), clock=SystemClock()) as runtime:
        invoker = Invoker(invoker_policy(config), runtime)
        direct: list[InvocationResult] = []
        waited: list[dict[str, Any]] = []

        async def one(wait: bool, seconds: float) -> None:
            body, result = await call(invoker, "f", {"seconds": seconds}, wait=wait)
            if wait:
                assert result.ok
                waited.append(body)
            else:
                direct.append(result)

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(one, False, 0.5)
        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(one, True, 0.2)
    outcomes = sorted(result.outcome.value for result in direct)
    assert outcomes == ["Success", "Success", "Throttled", "Throttled", "Throttled"]
    throttled = [r for r in direct if r.outcome is Outcome.THROTTLED]
    assert all(r.error_type == "TooManyRequestsException" for r in throttled)
    assert all(b"ReservedFunctionConcurrentInvocationLimitExceeded" in r.payload for r in throttled)
    assert len(waited) == 5
    assert _most_at_once([(b["started"], b["ended"]) for b in waited]) == 2
    assert len({b["pid"] for b in waited}) == 2  # never more than 2 environments


async def test_provisioned_environments_are_initialised_before_the_first_call(
    tmp_path: Path, lines: list[str]
) -> None:
    functions = {"f": {"handler": "lifecycle:state", "provisioned_concurrency": 2}}
    async with running(tmp_path, functions) as runtime:
        seen: list[tuple[dict[str, Any], InvocationResult]] = []

        async def one() -> None:
            seen.append(await call(runtime, "f", {"seconds": 0.4}))

        async with anyio.create_task_group() as tasks:
            for _ in range(3):
                tasks.start_soon(one)
    kinds = sorted(
        (body["environ"]["AWS_LAMBDA_INITIALIZATION_TYPE"], "Init Duration" in report_of(lines, r))
        for body, r in seen
    )
    assert kinds == [
        ("on-demand", True),  # the third spills over to an on-demand environment
        ("provisioned-concurrency", False),
        ("provisioned-concurrency", False),
    ]


async def test_a_cancelled_invocation_takes_its_environment_with_it(tmp_path: Path) -> None:
    async with running(tmp_path, {"f": {"handler": "lifecycle:sleep", "timeout": 60}}) as runtime:
        before, _ = await call(runtime, "f", {"seconds": 0})
        with anyio.move_on_after(0.3):
            await call(runtime, "f", {"seconds": 30})
        await gone(before["pid"])
        after, result = await call(runtime, "f", {"seconds": 0})
    assert result.ok and after["pid"] != before["pid"]


async def test_idle_environments_are_closed_after_keep_warm(tmp_path: Path) -> None:
    functions = {"f": {"handler": "lifecycle:sleep", "keep_warm": 0.2}}
    async with running(tmp_path, functions) as runtime:
        before, _ = await call(runtime, "f", {"seconds": 0})
        await gone(before["pid"])
        after, result = await call(runtime, "f", {"seconds": 0})
    assert result.ok and result.report and result.report.init_duration_ms is not None
    assert after["pid"] != before["pid"]


async def test_at_max_concurrency_a_new_environment_evicts_the_least_recently_used(
    tmp_path: Path,
) -> None:
    functions = {"a": {"handler": "lifecycle:sleep"}, "b": {"handler": "lifecycle:sleep"}}
    config = make_config(tmp_path, functions, max_concurrency=1)
    async with open_runtime(runtime_policy(config), clock=SystemClock()) as runtime:
        first, warm = await call(runtime, "a", {"seconds": 0})  # started at open
        _, other = await call(runtime, "b", {"seconds": 0})
        await gone(first["pid"])
        again, cold = await call(runtime, "a", {"seconds": 0})
    assert warm.report and warm.report.init_duration_ms is not None  # its first invocation
    assert other.report and other.report.init_duration_ms is not None
    assert cold.report and cold.report.init_duration_ms is not None
    assert again["pid"] != first["pid"]


async def test_environments_give_back_their_descriptors(tmp_path: Path) -> None:
    functions = {"f": {"handler": "lifecycle:sleep", "keep_warm": 0}}
    async with running(tmp_path, functions) as runtime:
        await call(runtime, "f", {"seconds": 0})
        await until(runtime, lambda s: s.environments == 0)  # closed, descriptors released
        before = _open_fds()
        pids = [(await call(runtime, "f", {"seconds": 0}))[0]["pid"] for _ in range(10)]
        await until(runtime, lambda s: s.environments == 0)
        after = _open_fds()
        assert not any(alive(pid) for pid in pids)
    assert len(set(pids)) == 10  # keep_warm = 0: a new environment each time
    assert after <= before


async def test_async_handlers_keep_one_event_loop_per_environment(tmp_path: Path) -> None:
    async with running(tmp_path, {"f": {"handler": "lifecycle:coroutine"}}) as runtime:
        first, _ = await call(runtime, "f")
        second, _ = await call(runtime, "f")
    assert first["loop"] == second["loop"] and second["count"] == 2


async def test_a_handler_failing_its_import_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(HandlerImportError) as caught:
        async with running(
            tmp_path, {"ok": {"handler": "lifecycle:noop"}, "bad": {"handler": "broken:handler"}}
        ):
            pass
    assert caught.value.error_type == "KeyError"
    assert "configuration missing" in str(caught.value)


async def test_an_init_failing_after_startup_fails_that_invocation(
    tmp_path: Path, lines: list[str]
) -> None:
    marker = tmp_path / "fail"
    function = {
        "handler": "flaky_init:handler",
        "keep_warm": 0,  # every invocation gets a new environment
        "environment": {"FAIL_MARKER": str(marker)},
    }
    async with running(tmp_path, {"f": function}) as runtime:
        marker.touch()
        body, failed = await call(runtime, "f")
        marker.unlink()
        answer, fine = await call(runtime, "f")
    assert failed.outcome is Outcome.FUNCTION_ERROR and failed.error_type == "RuntimeError"
    assert body["errorMessage"] == "init failed on purpose"
    assert "[ERROR] RuntimeError: init failed on purpose" in lines
    assert "Init Duration" in report_of(lines, failed)
    assert fine.ok and answer == "ok"


async def test_inline_and_python_functions_run_side_by_side(tmp_path: Path) -> None:
    functions = {
        "here": {"handler": "lifecycle:sleep", "runtime": "inline"},
        "there": {"handler": "lifecycle:sleep"},
    }
    async with running(tmp_path, functions) as runtime:
        here, _ = await call(runtime, "here", {"seconds": 0})
        there, _ = await call(runtime, "there", {"seconds": 0})
    assert here["pid"] == os.getpid() and there["pid"] != os.getpid()


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_worker_that_exits_by_itself_takes_its_process_group_with_it(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "child.pid"
    event = {"pid_file": str(pid_file), "then": "exit"}
    async with running(tmp_path, {"f": {"handler": "lifecycle:leave_child"}}) as runtime:
        _, result = await call(runtime, "f", event)
        assert result.outcome is Outcome.CRASHED and result.error_type == "Runtime.ExitError"
        child = int(pid_file.read_text())
        await gone(child, within=2.0)  # killed with the worker, not when the runtime closes


async def test_a_handler_killing_the_template_fails_only_its_invocation(
    tmp_path: Path, lines: list[str]
) -> None:
    functions: dict[str, dict[str, Any]] = {
        "killer": {"handler": "lifecycle:kill_template"},
        "bystander": {"handler": "lifecycle:state", "provisioned_concurrency": 1},
    }
    async with running(tmp_path, functions) as runtime:
        before, _ = await call(runtime, "killer", {"kill": False})
        body, result = await call(runtime, "killer")
        after, fine = await call(runtime, "killer", {"kill": False})
        # the provisioned environment died with the template and is started again
        await until(runtime, lambda s: s.templates == 2 and s.idle["bystander"] == 1)
        other, warm = await call(runtime, "bystander")
    assert result.outcome is Outcome.CRASHED and result.error_type == "Runtime.ExitError"
    assert body["errorMessage"] == (
        f"RequestId: {result.request_id} Error: Runtime exited with error: signal: killed"
    )
    assert report_of(lines, result)  # the envelope is complete
    assert fine.ok and after["template"] != before["template"]  # a new template forked it
    assert not alive(before["template"])
    assert warm.ok and other["environ"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == (
        "provisioned-concurrency"
    )


@pytest.mark.parametrize("then", ["exit", "return"])
async def test_a_child_that_left_the_process_group_does_not_outlive_its_environment(
    tmp_path: Path, then: str
) -> None:
    pid_file = tmp_path / "child.pid"
    event: dict[str, Any] = {"pid_file": str(pid_file), "then": then, "setsid": True}
    async with running(tmp_path, {"f": {"handler": "lifecycle:leave_child"}}) as runtime:
        _, result = await call(runtime, "f", event)
        child = int(pid_file.read_text())
        if then == "exit":  # the worker died by itself: its orphan goes at once
            assert result.outcome is Outcome.CRASHED
            await gone(child, within=2.0)
        else:  # warm: the child may run on while its environment lives
            assert result.ok and alive(child)
    await gone(child, within=2.0)  # closing the runtime ends it in any case
