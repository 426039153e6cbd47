"""A fleet whose members run different functions, sharing one Postgres store.

Instance A runs ``alpha`` and ``shared``; instance B runs ``beta`` and ``shared``. Every
function has its own watched directory (``shared``'s is watched by both). The queue holds
events of all three; each instance must lease only events of functions it runs. B is
SIGKILLed mid-run and restarted: every file of every function is still handled, by an
instance that runs its function, once, except the invocations in flight in B at the kill
(which run again once their lease expires). Postgres is required: the test fails, not
skips, when it is not reachable (CI has it).
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path

from conftest import Service, wait_for

CONCURRENCY = 4

HANDLERS = """
import os, time
from pathlib import Path
from urllib.parse import unquote_plus

LOG = Path(__file__).parent / "calls.log"

def record(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)

def handler(event, context):
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    line = f"{context.function_name} {os.getpid()} {key}"
    record("start " + line)
    time.sleep(0.05)
    record("end " + line)
"""


def member_config(tmp_path: Path, name: str, functions: tuple[str, ...], state_url: str) -> Path:
    config = tmp_path / f"{name}.toml"
    text = f"""
[service]
state_dir = "{state_url}"
max_concurrency = {CONCURRENCY}
drain_timeout = 10
"""
    for function in functions:
        text += f"""
[functions.{function}]
handler = "fleet:handler"
runtime = "inline"
timeout = 1
"""
    for function in functions:
        text += f"""
[[event_sources]]
function = "{function}"
name = "{function}-inbox"
type = "filedrop"
path = "{function}"
stable_for = 0.1
rescan_interval = 2
"""
    config.write_text(text)
    return config


def calls(tmp_path: Path) -> list[tuple[str, str, int, str]]:
    """(start | end, function, pid, key) per line of the handlers' log."""
    log = tmp_path / "calls.log"
    found = []
    for line in log.read_text().splitlines() if log.exists() else ():
        what, function, pid, key = line.split(" ", 3)
        found.append((what, function, int(pid), key))
    return found


def test_members_with_different_functions_share_one_store_and_survive_a_kill(
    tmp_path: Path, service, postgres_url: str
) -> None:
    (tmp_path / "fleet.py").write_text(HANDLERS)
    functions = ("alpha", "beta", "shared")
    for function in functions:
        (tmp_path / function).mkdir()
    a = service(member_config(tmp_path, "a", ("alpha", "shared"), postgres_url))
    b_config = member_config(tmp_path, "b", ("beta", "shared"), postgres_url)
    b: Service = service(b_config)
    a.wait_started()
    b.wait_started()

    written: dict[str, list[str]] = {f: [] for f in functions}
    stop = threading.Event()

    def arrivals() -> None:  # a file for each function every 60 ms
        i = 0
        while not stop.is_set():
            for function in functions:
                name = f"{function}-{i:04d}.txt"
                (tmp_path / function / name).write_text(name)
                written[function].append(name)
            i += 1
            stop.wait(0.06)

    writer = threading.Thread(target=arrivals)
    writer.start()
    try:
        wait_for(
            lambda: sum(what == "end" and f == "beta" for what, f, _, _ in calls(tmp_path)) >= 10,
            message="B handling beta events",
        )
        assert b.process is not None
        killed = b.process.pid
        b.kill()  # mid-run, with events of every function queued and in flight
        wait_for(
            lambda: (
                sum(f == "alpha" for _, f, _, _ in calls(tmp_path)) > len(written["alpha"]) // 2
                and len(written["beta"]) > 40
            ),
            message="A going on alone while beta events queue up",
        )
        b = service(b_config)
        b.wait_started()
        wait_for(lambda: len(written["alpha"]) >= 60, message="more files after the restart")
    finally:
        stop.set()
        writer.join()

    expected = {(f, key) for f, keys in written.items() for key in keys}

    def handled() -> set[tuple[str, str]]:
        return {(f, key) for what, f, _, key in calls(tmp_path) if what == "end"}

    # The events B had leased wait out their lease (timeout + 60 s) before anyone runs them.
    wait_for(lambda: handled() >= expected, timeout=120, message="every file of every function")
    assert a.process is not None and a.process.poll() is None, a.stderr  # A never stopped
    for member in (a, b):
        assert member.terminate() == 0, member.stderr
        assert "Traceback" not in member.stderr, member.stderr

    lines = calls(tmp_path)
    assert handled() == expected
    pids_a = {a.process.pid}
    for what, function, pid, key in lines:  # each function only where it is configured
        assert (
            (function == "alpha" and pid in pids_a)
            or (function == "beta" and pid not in pids_a)
            or function == "shared"
        ), (what, function, pid, key)
    starts = collections.Counter((f, key) for what, f, _, key in lines if what == "start")
    repeated = {event for event, n in starts.items() if n > 1}
    in_flight_at_kill = {(f, key) for what, f, pid, key in lines if pid == killed}
    assert repeated <= in_flight_at_kill, repeated - in_flight_at_kill
    assert len(repeated) <= CONCURRENCY, repeated
