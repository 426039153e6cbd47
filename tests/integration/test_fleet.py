"""A fleet: two `streamfn run` processes with one config and one Postgres state store.

Both watch the same directory and run the same schedule; the shared store makes every file
and every tick run once across the fleet, not once per process. Postgres is required: the
tests fail, not skip, when it is not reachable (CI has it).
"""

from __future__ import annotations

import collections
import itertools
from datetime import datetime
from pathlib import Path

from conftest import wait_for

HANDLERS = """
import os, time
from pathlib import Path
from urllib.parse import unquote_plus

HERE = Path(__file__).parent

def append(name, line):
    fd = os.open(HERE / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)

def collect(event, context):
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    time.sleep(0.05)
    append("calls.log", f"{os.getppid()} {key}")

def tick(event, context):
    append("ticks.log", f"{os.getppid()} " + event["time"])
"""


def fleet_config(tmp_path: Path, state_url: str) -> Path:
    (tmp_path / "fleet.py").write_text(HANDLERS)
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "streamfn.toml"
    config.write_text(f"""
[service]
state_dir = "{state_url}"
max_concurrency = 4
drain_timeout = 10

[functions.collect]
handler = "fleet:collect"
timeout = 10

[functions.tick]
handler = "fleet:tick"

[[event_sources]]
function = "collect"
type = "filedrop"
path = "inbox"
stable_for = 0.3

[[event_sources]]
function = "tick"
type = "cron"
schedule = "rate(2 seconds)"
""")
    return config


def logged(path: Path) -> list[tuple[str, str]]:
    """(process, key) per line of a handler's log."""
    if not path.exists():
        return []
    return [(p, key) for p, _, key in (x.partition(" ") for x in path.read_text().splitlines())]


def test_two_processes_handle_each_file_and_each_tick_once(
    tmp_path: Path, service, postgres_url: str
) -> None:
    config = fleet_config(tmp_path, postgres_url)
    ticks = tmp_path / "ticks.log"
    # Both start at once, for the first time: they must agree on one anchor for the
    # rate() schedule (the first to store it wins), or every tick would fire twice.
    first, second = service(config), service(config)
    first.wait_started()
    second.wait_started()
    fleet = [first, second]
    wait_for(lambda: logged(ticks), timeout=15, message="the first tick")
    ticks_before = len(logged(ticks))

    expected = {f"file-{i:02d}.txt" for i in range(50)}
    for name in sorted(expected):
        (tmp_path / "inbox" / name).write_text(name)
    calls = tmp_path / "calls.log"
    wait_for(
        lambda: {key for _, key in logged(calls)} >= expected,
        timeout=60,
        message="every file to be handled",
    )
    wait_for(
        lambda: len(logged(ticks)) >= ticks_before + 3,
        timeout=30,
        message="three ticks with both instances running",
    )
    for member in fleet:
        assert member.terminate() == 0, member.stderr

    handled = collections.Counter(key for _, key in logged(calls))
    assert set(handled) == expected
    assert [key for key, n in handled.items() if n != 1] == []
    fired = collections.Counter(time for _, time in logged(ticks))
    assert [time for time, n in fired.items() if n != 1] == []  # once, not once per process
    # ...and on one schedule: had each instance anchored its own, ticks would interleave.
    times = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in fired)
    assert all((b - a).total_seconds() == 2 for a, b in itertools.pairwise(times)), times
    for member in fleet:
        assert "Traceback" not in member.stderr, member.stderr
