"""Concurrency limits at the runtime boundary: waiting callers and throttled ones."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from streamfn.config import parse_config
from streamfn.invoke.invoker import Invoker, InvokerPolicy
from streamfn.policies import invoker_policy
from streamfn.testing import GatedRuntime
from streamfn.types import InvocationRequest, InvocationResult, Outcome

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, *, reserved: int | None, service: int = 64) -> InvokerPolicy:
    function: dict[str, object] = {"handler": "m:h", "runtime": "inline"}
    if reserved is not None:
        function["reserved_concurrency"] = reserved
    raw = {
        "service": {"max_concurrency": service},
        "functions": {"f": function, "g": {"handler": "m:h", "runtime": "inline"}},
    }
    return invoker_policy(parse_config(raw, {}, path=tmp_path / "streamfn.toml"))


def request(n: int, function: str = "f") -> InvocationRequest:
    return InvocationRequest(function=function, payload=b"{}", request_id=f"r{n}")


async def invoke_five(
    invoker: Invoker, runtime: GatedRuntime, *, wait: bool
) -> list[InvocationResult]:
    """Five concurrent invocations of ``f``; two of them (reserved_concurrency 2) run until
    everyone who will is waiting, then the gate opens."""
    results: list[InvocationResult] = []

    async def call(n: int) -> None:
        results.append(await invoker.invoke(request(n), wait=wait))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(call, n)
        await anyio.wait_all_tasks_blocked()
        assert runtime.running == 2
        runtime.gate.set()
    return results


async def test_direct_invocations_over_reserved_concurrency_are_throttled(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    results = await invoke_five(Invoker(config(tmp_path, reserved=2), runtime), runtime, wait=False)
    throttled = [r for r in results if r.outcome is Outcome.THROTTLED]
    assert len(throttled) == 3 and runtime.peak == 2
    body = msgspec.json.decode(throttled[0].payload)
    assert throttled[0].error_type == "TooManyRequestsException"
    assert body["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert all(r.report is None for r in throttled)


async def test_waiting_callers_run_in_turn_within_the_limit(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    results = await invoke_five(Invoker(config(tmp_path, reserved=2), runtime), runtime, wait=True)
    assert [r.outcome for r in results] == [Outcome.SUCCESS] * 5
    assert runtime.peak == 2


async def test_the_service_limit_caps_all_functions(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    invoker = Invoker(config(tmp_path, reserved=None, service=3), runtime)
    results: list[InvocationResult] = []

    async def call(n: int) -> None:
        results.append(await invoker.invoke(request(n, "f" if n % 2 else "g"), wait=False))

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(call, n)
        await anyio.wait_all_tasks_blocked()
        runtime.gate.set()
    throttled = [r for r in results if r.outcome is Outcome.THROTTLED]
    assert len(throttled) == 3
    assert (
        msgspec.json.decode(throttled[0].payload)["Reason"] == "ConcurrentInvocationLimitExceeded"
    )


async def test_zero_reserved_concurrency_always_throttles(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    invoker = Invoker(config(tmp_path, reserved=0), runtime)
    result = await invoker.invoke(request(1), wait=True)
    assert result.outcome is Outcome.THROTTLED and runtime.peak == 0


async def test_try_acquire_takes_a_slot_without_waiting_and_gives_it_back() -> None:
    invoker = Invoker(InvokerPolicy(max_concurrency=3, reserved={"f": 1, "z": 0}), GatedRuntime())
    first = invoker.try_acquire("f")
    assert first is not None
    assert invoker.try_acquire("f") is None  # f is at its reserved concurrency
    assert invoker.try_acquire("z") is None  # reserved 0: always throttled
    other = [invoker.try_acquire("g"), invoker.try_acquire("g")]
    assert all(other) and invoker.in_flight() == 3
    assert invoker.try_acquire("g") is None  # the service limit
    first.release()
    first.release()  # idempotent
    assert invoker.in_flight() == 2
    again = invoker.try_acquire("f")
    assert again is not None


async def test_run_invokes_in_the_slot_and_releases_it() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    invoker = Invoker(InvokerPolicy(max_concurrency=1), runtime)
    slot = invoker.try_acquire("f")
    assert slot is not None and invoker.try_acquire("g") is None
    result = await invoker.run(slot, request(1))
    assert result.ok and invoker.in_flight() == 0
    assert invoker.try_acquire("g") is not None
