"""Chaos: a loaded filedrop pipeline on SQLite, SIGKILLed ten times at random moments while
files keep arriving, then run once more to the end.

The promise (README, "Nothing is lost" and "Duplicates are contained"): every file's handler
runs at least once, and an invocation is repeated only when the kill came before its
completion could be recorded, i.e. within moments of the handler returning. The handler
writes a line when it starts and when it returns (O_APPEND, fsync), with the time; the test
notes the time of each kill.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from pathlib import Path

from conftest import Service, wait_for

KILLS = 10
GRACE = 1.0  # a completion this long before a kill must have been recorded

HANDLER = """
import os, time
from pathlib import Path
from urllib.parse import unquote_plus

LOG = Path(__file__).parent / "invocations.log"

def record(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)

def handler(event, context):
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    record(f"start {time.time()!r} {key}")
    time.sleep(0.02)
    record(f"end {time.time()!r} {key}")
"""


def invocations(tmp_path: Path) -> dict[str, list[tuple[str, float]]]:
    """Per file key, its handler's ("start" | "end", time) lines in order."""
    log = tmp_path / "invocations.log"
    found: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            what, at, key = line.split(" ", 2)
            found[key].append((what, float(at)))
    return found


def finished(tmp_path: Path) -> set[str]:
    return {key for key, lines in invocations(tmp_path).items() if ("end" in dict(lines))}


def test_ten_sigkills_lose_no_file_and_repeat_no_recorded_completion(
    tmp_path: Path, service
) -> None:
    (tmp_path / "fn.py").write_text(HANDLER)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "streamfn.toml"
    config.write_text("""
[service]
max_concurrency = 8
drain_timeout = 10

[functions.collect]
handler = "fn:handler"
runtime = "inline"

[[event_sources]]
function = "collect"
type = "filedrop"
path = "inbox"
stable_for = 0.1
rescan_interval = 2
""")
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    written: list[str] = []
    stop = threading.Event()

    def arrivals() -> None:  # about 40 files a second, through every kill and restart
        while not stop.is_set():
            name = f"file-{len(written):05d}.txt"
            (inbox / name).write_text(name)
            written.append(name)
            stop.wait(0.025)

    writer = threading.Thread(target=arrivals)
    writer.start()
    kills: list[float] = []
    try:
        for _ in range(KILLS):
            running: Service = service(config)
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 1.0))  # maybe while opening the store
            else:
                running.wait_started()
                time.sleep(rng.uniform(0.1, 1.5))  # a random moment under load
            kills.append(time.time())
            running.kill()
    finally:
        stop.set()
        writer.join()

    last = service(config)
    last.wait_started()
    expected = set(written)
    wait_for(
        lambda: finished(tmp_path) >= expected, timeout=60, message=f"every file (seed {seed})"
    )
    assert last.terminate() == 0, last.stderr
    assert "Traceback" not in last.stderr, last.stderr

    seen = invocations(tmp_path)
    assert set(seen) == expected  # nothing lost, nothing invented
    wrongly_repeated = []
    for key, lines in seen.items():
        starts = [i for i, (what, _) in enumerate(lines) if what == "start"]
        for first, again in itertools.pairwise(starts):
            ended = [at for what, at in lines[first:again] if what == "end"]
            if not ended:
                continue  # killed in flight: running it again is the promise
            kill = min((k for k in kills if k >= ended[0]), default=None)
            if kill is None or kill - ended[0] > GRACE:
                wrongly_repeated.append((key, ended[0], kill))
    assert wrongly_repeated == [], f"seed {seed}, kills at {kills}"
    assert len(kills) == KILLS
