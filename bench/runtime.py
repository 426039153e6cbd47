"""Execution environments: warm round trip and cold start, process runtime vs inline.

Run: ``.venv/bin/python bench/runtime.py [--warm N] [--cold N]``. Prints figures, asserts
nothing. Targets (issue 4): warm p50 <= 0.2 ms for a no-op handler; cold start to first
response <= 50 ms for a trivial handler (AWS quotes about 100 ms).

- *warm*: ``runtime.invoke`` of a no-op handler, one after another, in an environment that
  is already initialised; the inline runtime (handler in the engine process) is the
  baseline. START/END/REPORT are not written anywhere (the function logger is at WARNING),
  so the figure is the runtime's own cost, not a log handler's.
- *cold*: a function with ``keep_warm = 0`` gets a new environment for every invocation:
  fork from the template, limits, import of the handler, first response. The inline
  baseline is opening the inline runtime (import) plus its first invocation.
- *kafka*: the Kafka throughput ratio on the process runtime is printed when
  ``bench/kafka_throughput.py`` exists and exposes ``measure(runtime=...)``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import msgspec

from streamfn.clock import SystemClock
from streamfn.config import parse_config
from streamfn.policies import runtime_policy
from streamfn.runtime.base import FUNCTION_LOGGER, Runtime
from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.policy import RuntimePolicy
from streamfn.runtime.router import open_runtime
from streamfn.types import InvocationRequest

HANDLERS = {
    "noop.py": "def handler(event, context):\n    return None\n",
    "trivial.py": "import json\n\ndef handler(event, context):\n    return {'ok': True}\n",
}


def make_policy(root: Path) -> RuntimePolicy:
    functions = {
        "inline_noop": {"handler": "noop:handler", "runtime": "inline"},
        "python_noop": {"handler": "noop:handler"},
        "inline_trivial": {"handler": "trivial:handler", "runtime": "inline"},
        "cold_trivial": {"handler": "trivial:handler", "keep_warm": 0},
    }
    return runtime_policy(parse_config({"functions": functions}, {}, path=root / "streamfn.toml"))


async def warm(runtime: Runtime, function: str, count: int) -> list[float]:
    times = []
    for index in range(count + 200):
        request = InvocationRequest(function=function, payload=b"{}", request_id=f"w{index}")
        started = time.perf_counter()
        result = await runtime.invoke(request)
        elapsed = time.perf_counter() - started
        assert result.ok, result
        if index >= 200:  # warm-up
            times.append(elapsed * 1000)
    return times


async def cold(runtime: Runtime, count: int) -> list[float]:
    times = []
    for index in range(count):
        await anyio.sleep(0.02)  # let the previous environment be reaped
        request = InvocationRequest(function="cold_trivial", payload=b"{}", request_id=f"c{index}")
        started = time.perf_counter()
        result = await runtime.invoke(request)
        times.append((time.perf_counter() - started) * 1000)
        assert result.ok and result.report and result.report.init_duration_ms, result
    return times


async def inline_cold(policy: RuntimePolicy, count: int) -> list[float]:
    only = {"inline_trivial": policy.functions["inline_trivial"]}
    subset = msgspec.structs.replace(policy, functions=only)
    times = []
    for index in range(count):
        started = time.perf_counter()
        async with open_inline_runtime(subset, clock=SystemClock()) as runtime:
            request = InvocationRequest(
                function="inline_trivial", payload=b"{}", request_id=f"i{index}"
            )
            result = await runtime.invoke(request)
        times.append((time.perf_counter() - started) * 1000)
        assert result.ok
    return times


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{name:<34} p50 {statistics.median(ordered):8.3f} ms   p99 {p99:8.3f} ms   "
        f"(n={len(ordered)})"
    )


async def main(args: argparse.Namespace) -> None:
    logging.getLogger(FUNCTION_LOGGER).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="streamfn-bench-") as tmp:
        root = Path(tmp)
        for name, source in HANDLERS.items():
            (root / name).write_text(textwrap.dedent(source))
        policy = make_policy(root)
        started = time.perf_counter()
        async with open_runtime(policy, clock=SystemClock()) as runtime:
            opened = (time.perf_counter() - started) * 1000
            print(f"open_runtime (template + first environments): {opened:.1f} ms")
            inline = await warm(runtime, "inline_noop", args.warm)
            process = await warm(runtime, "python_noop", args.warm)
            print("\nwarm invoke round trip, no-op handler (target: process p50 <= 0.2 ms)")
            print(summary("inline (baseline)", inline))
            print(summary("python (worker process)", process))
            ratio = statistics.median(process) / statistics.median(inline)
            print(f"{'process / inline p50':<34} {ratio:.2f}x")
            cold_times = await cold(runtime, args.cold)
        inline_times = await inline_cold(policy, args.cold)
        print("\ncold start to first response, trivial handler (target: process p50 <= 50 ms)")
        print(summary("inline (open + first invoke)", inline_times))
        print(summary("python (fork + init + invoke)", cold_times))
    # Issue 4's third figure: the Kafka mapping on the process runtime, against raw aiokafka
    # in the same run (bench/kafka_throughput.py does the measuring).
    print()
    print("kafka throughput on the process runtime (batch_size 500; target ratio >= 0.7):")
    kafka = Path(__file__).with_name("kafka_throughput.py")
    result = await anyio.run_process(
        [sys.executable, str(kafka), "--runtime", "python", "--repeat", "2"], check=False
    )
    print((result.stdout or result.stderr).decode().rstrip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5000)
    parser.add_argument("--cold", type=int, default=50)
    options = parser.parse_args()
    anyio.run(
        main, options, backend="asyncio", backend_options={"use_uvloop": sys.platform != "win32"}
    )
