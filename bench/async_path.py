"""Benchmark: files → filedrop → durable async queue → no-op handler → checkpoint.

Prints, never asserts:

- throughput: events/s for N small files renamed into the watched directory at once, from
  the first rename until every event has completed (handler returned, idempotency key
  completed and event acked in the state store);
- latency: p50 / p99 from a file being renamed into place to its handler starting, for
  files dropped one at a time;

each beside a baseline measured in the same run: the bare watcher (the same inotify
notifications, the handler called directly: no queue, no durability, no checkpoint), the
floor of what any directory-driven trigger costs on this machine.

    python bench/async_path.py [--files 2000] [--latency-files 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import inotify_simple  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamfn.config import load_config  # noqa: E402
from streamfn.engine import Engine  # noqa: E402
from streamfn.plugins import Registry  # noqa: E402

HANDLER = """
import time
STARTED = {}

def handler(event, context):
    STARTED[event["Records"][0]["s3"]["object"]["key"]] = time.time()
"""


def drop(inbox: Path, staging: Path, names: list[str]) -> dict[str, float]:
    """Rename each file into place; return when each rename happened."""
    for name in names:
        (staging / name).write_text("x")
    renamed: dict[str, float] = {}
    for name in names:
        renamed[name] = time.time()
        os.rename(staging / name, inbox / name)
    return renamed


async def wait_until(condition: Callable[[], bool], limit: float = 120.0) -> None:
    """Poll: the benchmark measures from outside, as a user's observer would."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def streamfn_run(work: Path, files: int, latency_files: int) -> tuple[float, list[float]]:
    (work / "noop.py").write_text(HANDLER)
    (work / "inbox").mkdir()
    (work / "staging").mkdir()
    config_path = work / "streamfn.toml"
    config_path.write_text("""
[service]
max_concurrency = 64

[functions.noop]
handler = "noop:handler"
runtime = "inline"

[[event_sources]]
function = "noop"
type = "filedrop"
path = "inbox"
""")
    registry = Registry.discover()
    config = load_config(config_path, registry)
    engine = Engine(config, registry)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await engine.started.wait()
        await anyio.sleep(1.0)  # let the watcher come up (the benchmark, not a test)
        dispatcher = engine.dispatcher
        assert dispatcher is not None
        names = [f"t-{i:05d}.txt" for i in range(files)]
        started = time.perf_counter()
        await anyio.to_thread.run_sync(drop, work / "inbox", work / "staging", names)
        await wait_until(lambda: dispatcher.statistics().succeeded >= files)
        throughput = files / (time.perf_counter() - started)

        module = sys.modules["noop"]
        latencies: list[float] = []
        for i in range(latency_files):
            name = f"l-{i:05d}.txt"
            renamed = await anyio.to_thread.run_sync(drop, work / "inbox", work / "staging", [name])
            await wait_until(lambda name=name: name in module.STARTED)  # type: ignore[misc]
            latencies.append(module.STARTED[name] - renamed[name])
        engine.stop()
    return throughput, latencies


async def bare_watcher(work: Path, files: int, latency_files: int) -> tuple[float, list[float]]:
    """The floor: the same inotify notifications, the handler called directly."""
    inbox, staging = work / "inbox", work / "staging"
    inbox.mkdir()
    staging.mkdir()
    seen: dict[str, float] = {}
    notify = inotify_simple.INotify(nonblocking=True)
    notify.add_watch(inbox, inotify_simple.flags.MOVED_TO | inotify_simple.flags.CLOSE_WRITE)

    async def watch() -> None:
        while True:
            await anyio.wait_readable(notify.fileno())
            for event in notify.read(timeout=0):
                seen.setdefault(event.name, time.time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        names = [f"t-{i:05d}.txt" for i in range(files)]
        started = time.perf_counter()
        await anyio.to_thread.run_sync(drop, inbox, staging, names)
        await wait_until(lambda: len(seen) >= files)
        throughput = files / (time.perf_counter() - started)
        latencies = []
        for i in range(latency_files):
            name = f"l-{i:05d}.txt"
            renamed = await anyio.to_thread.run_sync(drop, inbox, staging, [name])
            await wait_until(lambda name=name: name in seen)  # type: ignore[misc]
            latencies.append(seen[name] - renamed[name])
        tg.cancel_scope.cancel()
    notify.close()
    return throughput, latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--latency-files", type=int, default=200)
    args = parser.parse_args()

    results = {}
    for label, run in (
        ("bare watcher (baseline)", bare_watcher),
        ("streamfn filedrop → queue → handler", streamfn_run),
    ):
        with tempfile.TemporaryDirectory() as work:
            results[label] = anyio.run(
                run,
                Path(work),
                args.files,
                args.latency_files,
                backend_options={"use_uvloop": True},
            )

    print(f"{args.files} files renamed in at once; {args.latency_files} dropped one at a time")
    print(f"{'path':40} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for label, (throughput, latencies) in results.items():
        ms = [x * 1000 for x in latencies]
        print(f"{label:40} {throughput:10.0f} {percentile(ms, 50):8.1f} {percentile(ms, 99):8.1f}")
    (base_tp, base_lat), (tp, lat) = results.values()
    print(
        f"ratio streamfn / baseline: throughput {tp / base_tp:.2f}, "
        f"p50 latency {percentile(lat, 50) / percentile(base_lat, 50):.2f}x"
    )


if __name__ == "__main__":
    main()
