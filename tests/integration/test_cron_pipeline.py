"""Schedules through a real service: ticks, downtime catch-up, configured input."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime
from pathlib import Path

from conftest import wait_for

RECORDER = """
import json, os
from pathlib import Path

def handler(event, context):
    fd = os.open(Path(__file__).parent / "ticks.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(event) + "\\n").encode())
    os.close(fd)
"""


def ticks(tmp_path: Path) -> list[dict]:
    log = tmp_path / "ticks.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def pipeline(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "recorder.py").write_text(RECORDER)
    config = tmp_path / "streamfn.toml"
    config.write_text(f"""
[functions.tick]
handler = "recorder:handler"

[[event_sources]]
function = "tick"
type = "cron"
schedule = "rate(2 seconds)"
{extra}
""")
    return config


def parse(event: dict) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def test_scheduled_events_have_eventbridges_shape(tmp_path: Path, service) -> None:
    running = service(pipeline(tmp_path))
    running.wait_started()
    wait_for(lambda: len(ticks(tmp_path)) >= 2, timeout=15, message="two ticks")
    assert running.terminate() == 0
    first, second = ticks(tmp_path)[:2]
    assert set(first) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert (first["version"], first["detail-type"], first["source"]) == (
        "0",
        "Scheduled Event",
        "aws.events",
    )
    assert first["resources"] == ["arn:aws:events:local:000000000000:rule/tick-cron"]
    assert first["detail"] == {} and first["id"] != second["id"]
    assert (parse(second) - parse(first)).total_seconds() == 2


def test_a_schedule_missed_during_downtime_fires_once_after_restart(
    tmp_path: Path, service
) -> None:
    config = pipeline(tmp_path)
    first = service(config)
    first.wait_started()
    wait_for(lambda: len(ticks(tmp_path)) >= 1, timeout=15, message="a first tick")
    assert first.terminate() == 0
    before = ticks(tmp_path)
    last_before = parse(before[-1]).timestamp()
    time.sleep(5)  # the downtime under test: two or three ticks are missed

    second = service(config)
    second.wait_started()
    wait_for(
        lambda: len(ticks(tmp_path)) >= len(before) + 3,
        timeout=15,
        message="the catch-up tick and two regular ones",
    )
    assert second.terminate() == 0
    times = [parse(t).timestamp() for t in ticks(tmp_path)[len(before) :]]
    # Ticks were missed while it was down (the first one at least), and one fired for them:
    # had each fired, the first would be 2 s after the last before; had an older one fired
    # instead of the latest, the next regular tick would come 4 s after it.
    assert times[0] - last_before >= 4
    assert all(b - a == 2 for a, b in itertools.pairwise(times))
    assert second.stderr.count("catching up: firing the tick of") == 1
    every = [t["time"] for t in ticks(tmp_path)]
    assert len(every) == len(set(every))  # no tick twice


def test_configured_input_replaces_the_scheduled_event(tmp_path: Path, service) -> None:
    # (catch_up = false is decided by plan_tick, covered in tests/unit/test_cron_schedule.py:
    # its grace is 60 s, too long to wait for here.)
    config = pipeline(tmp_path, 'catch_up = false\ninput = \'{"job": "report"}\'')
    running = service(config)
    running.wait_started()
    wait_for(lambda: len(ticks(tmp_path)) >= 2, timeout=15, message="two ticks")
    assert running.terminate() == 0
    assert all(event == {"job": "report"} for event in ticks(tmp_path))
