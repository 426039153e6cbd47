"""Files dropped into a watched directory, through a real `streamfn run` process."""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import unquote_plus

from conftest import Service, wait_for

HANDLER = """
import os, time
from pathlib import Path
from urllib.parse import unquote_plus

LOG = Path(__file__).parent / "calls.log"
DELAY_FILE = Path(__file__).parent / "delay"
DELAY = float(DELAY_FILE.read_text()) if DELAY_FILE.exists() else 0.0

def append(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)

def handler(event, context):
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    append("start " + key)
    time.sleep(DELAY)
    append("end " + key)
    return {"key": key}
"""


def make_pipeline(
    tmp_path: Path, *, max_concurrency: int = 16, delay: float = 0.0, runtime: str = "python"
) -> Path:
    (tmp_path / "fn.py").write_text(HANDLER)
    if delay:
        (tmp_path / "delay").write_text(str(delay))
    config = tmp_path / "streamfn.toml"
    config.write_text(f"""
[service]
max_concurrency = {max_concurrency}
drain_timeout = 10

[functions.collect]
handler = "fn:handler"
timeout = 10
runtime = "{runtime}"

[[event_sources]]
function = "collect"
type = "filedrop"
path = "inbox"
stable_for = 0.5
""")
    (tmp_path / "inbox").mkdir()
    return config


def calls(tmp_path: Path, kind: str = "end") -> collections.Counter[str]:
    log = tmp_path / "calls.log"
    if not log.exists():
        return collections.Counter()
    prefix = kind + " "
    return collections.Counter(
        line[len(prefix) :] for line in log.read_text().splitlines() if line.startswith(prefix)
    )


def drop_files(inbox: Path) -> set[str]:
    """200 files: written at once, written slowly, renamed into place, odd names."""
    expected: set[str] = set()
    for i in range(130):
        (inbox / f"plain-{i:03d}.txt").write_text(f"file {i}\n")
        expected.add(f"plain-{i:03d}.txt")
    (inbox / "nested" / "deeper").mkdir(parents=True)
    for i in range(20):
        name = f"nested/deeper/n-{i}.csv"
        (inbox / name).write_text("a,b\n")
        expected.add(name)
    staging = inbox.parent / "staging"
    staging.mkdir()
    for i in range(20):
        (staging / f"r-{i}.json").write_text(json.dumps({"i": i}))
        os.rename(staging / f"r-{i}.json", inbox / f"renamed-{i}.json")
        expected.add(f"renamed-{i}.json")
        # a temp file renamed into place, as many writers do
        (inbox / f".r-{i}.json.tmp").write_text("x")
        os.rename(inbox / f".r-{i}.json.tmp", inbox / f"tmp-renamed-{i}.json")
        expected.add(f"tmp-renamed-{i}.json")
    odd = "my report (final) +ünïcødé ✓.txt"
    (inbox / odd).write_text("odd name\n")
    expected.add(odd)
    (inbox / ".hidden").write_text("never an event")
    (inbox / "partial.txt.part").write_text("never an event")

    def slow_writer(name: str) -> None:
        with open(inbox / name, "w") as file:
            for chunk in range(4):
                file.write(f"chunk {chunk}\n")
                file.flush()
                time.sleep(0.3)

    slow = [f"slow-{i}.log" for i in range(9)]
    threads = [threading.Thread(target=slow_writer, args=(name,)) for name in slow]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected.update(slow)
    return expected


def test_two_hundred_files_are_each_handled_exactly_once(
    tmp_path: Path, service, function_runtime: str
) -> None:
    config = make_pipeline(tmp_path, runtime=function_runtime)
    running: Service = service(config)
    running.wait_started()
    expected = drop_files(tmp_path / "inbox")
    assert len(expected) == 200

    wait_for(
        lambda: set(calls(tmp_path)) >= expected, timeout=60, message="every file to be handled"
    )
    assert running.terminate() == 0
    handled = calls(tmp_path)
    assert set(handled) == expected, set(handled) ^ expected
    assert [key for key, n in handled.items() if n != 1] == []
    # Slowly written files were taken complete, never half-written: the handler saw the key
    # only once, and only after the writer finished (else it would have run twice).


def test_files_present_at_startup_are_processed_and_remembered(tmp_path: Path, service) -> None:
    config = make_pipeline(tmp_path)
    inbox = tmp_path / "inbox"
    for i in range(5):
        (inbox / f"early-{i}.txt").write_text("hello")
        os.utime(inbox / f"early-{i}.txt", (time.time() - 60, time.time() - 60))
    first = service(config)
    first.wait_started()
    wait_for(lambda: len(calls(tmp_path)) == 5, message="files present at startup")
    assert first.terminate() == 0

    # Restart: processed files are remembered; a rewritten file is a new object.
    (inbox / "early-0.txt").write_text("changed")
    second = service(config)
    second.wait_started()
    wait_for(lambda: calls(tmp_path)["early-0.txt"] == 2, message="the rewritten file")
    assert second.terminate() == 0
    assert calls(tmp_path) == {**{f"early-{i}.txt": 1 for i in range(1, 5)}, "early-0.txt": 2}


def test_sigkill_loses_no_file_and_repeats_only_in_flight_ones(
    tmp_path: Path, service, function_runtime: str
) -> None:
    concurrency = 4
    config = make_pipeline(
        tmp_path, max_concurrency=concurrency, delay=0.2, runtime=function_runtime
    )
    first = service(config)
    first.wait_started()
    inbox = tmp_path / "inbox"
    expected = {f"k-{i:02d}.txt" for i in range(40)}
    for name in sorted(expected):
        (inbox / name).write_text(name)
    wait_for(lambda: len(calls(tmp_path)) >= 12, timeout=60, message="some files handled")
    first.kill()
    completed_before = set(calls(tmp_path))

    second = service(config)
    second.wait_started()
    wait_for(
        lambda: set(calls(tmp_path)) >= expected, timeout=60, message="every file after the restart"
    )
    assert second.terminate() == 0

    handled = calls(tmp_path)
    assert set(handled) == expected
    repeated = {key for key, n in handled.items() if n > 1}
    # Only invocations in flight at the kill may repeat: at most one per worker slot.
    assert len(repeated) <= concurrency, repeated
    assert len(completed_before - repeated) >= len(completed_before) - concurrency
    assert all(n <= 2 for n in handled.values())


def test_a_symlink_pointing_outside_is_skipped_with_a_warning(tmp_path: Path, service) -> None:
    config = make_pipeline(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    running = service(config)
    running.wait_started()
    (tmp_path / "inbox" / "link.txt").symlink_to(secret)
    (tmp_path / "inbox" / "real.txt").write_text("inside")
    wait_for(lambda: "real.txt" in calls(tmp_path), message="the real file")
    wait_for(lambda: "symlink pointing outside" in running.stderr, message="the warning")
    assert running.terminate() == 0
    assert "link.txt" not in calls(tmp_path)
    assert unquote_plus("link.txt") not in calls(tmp_path, "start")


def test_filters_drop_events_before_any_invocation(tmp_path: Path, service) -> None:
    config = make_pipeline(tmp_path)
    config.write_text(
        config.read_text()
        + """filters = ['{"Records": {"s3": {"object": {"key": [{"suffix": ".csv"}]}}}}',
           '{"Records": {"s3": {"object": {"size": [{"numeric": [">", 100]}]}}}}']
"""
    )
    running = service(config)
    running.wait_started()
    inbox = tmp_path / "inbox"
    (inbox / "small.txt").write_text("tiny")
    (inbox / "data.csv").write_text("a,b")
    (inbox / "big.txt").write_text("x" * 200)
    wait_for(lambda: set(calls(tmp_path)) == {"data.csv", "big.txt"}, message="matching files")
    assert running.terminate() == 0
    assert "small.txt" not in calls(tmp_path, "start")


def test_bad_directory_entries_never_stop_the_service(tmp_path: Path, service) -> None:
    # Each of these stopped the whole service, and every restart stopped it again.
    config = make_pipeline(tmp_path)
    config.write_text(
        config.read_text()
        + """rescan_interval = 0.2

[[event_sources]]
function = "collect"
name = "own-proc"
type = "filedrop"
path = "/proc/self"
suffix = "mem"
rescan_interval = 0.2
"""
    )
    inbox = tmp_path / "inbox"
    (inbox / "a").symlink_to(inbox / "b")
    (inbox / "b").symlink_to(inbox / "a")
    (inbox / "x").symlink_to(inbox / "x")
    with open(os.fsencode(inbox) + b"/\xff\xfe.txt", "wb") as file:
        file.write(b"not a UTF-8 name")
    (inbox / "before.txt").write_text("dropped before the start")
    for start in range(2):  # a restart meets the same entries
        running = service(config)
        running.wait_started()
        good = f"after-{start}.txt"
        (inbox / good).write_text("dropped while running")
        wait_for(lambda g=good: g in calls(tmp_path), message="a good file")  # type: ignore[misc]
        wait_for(
            lambda r=running: "skipping mem: cannot read it" in r.stderr,  # type: ignore[misc]
            message="the EIO warning",
        )
        time.sleep(0.5)  # several rescans: the warnings must not repeat
        assert running.process is not None and running.process.poll() is None
        assert running.terminate() == 0
        err = running.stderr
        for warning in (
            "skipping a: cannot follow the symlink",
            "skipping b: cannot follow the symlink",
            "skipping x: cannot follow the symlink",
            "skipping \\xff\\xfe.txt: its name is not UTF-8 (S3 object keys are)",
            "skipping mem: cannot read it: Input/output error",
        ):
            assert err.count(warning) == 1, (warning, err)
        assert "Traceback" not in err, err
    assert calls(tmp_path) == {"before.txt": 1, "after-0.txt": 1, "after-1.txt": 1}
