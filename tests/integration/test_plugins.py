"""A third-party connector, installed as a distribution with an entry point, runs as a
built-in one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import wait_for

PLUGINS = Path(__file__).parent / "plugins"
RECORDER = """
import json, os
from pathlib import Path

def handler(event, context):
    fd = os.open(Path(__file__).parent / "events.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(event) + "\\n").encode())
    os.close(fd)
"""


def plugin_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def pipeline(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "recorder.py").write_text(RECORDER)
    config = tmp_path / "streamfn.toml"
    config.write_text(f"""
[functions.record]
handler = "recorder:handler"

[[event_sources]]
function = "record"
type = "ticker"
count = 4
{extra}
""")
    return config


def events(tmp_path: Path) -> list[dict]:
    log = tmp_path / "events.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_third_party_connector_is_discovered_and_runs(tmp_path: Path, service) -> None:
    config = pipeline(tmp_path)
    running = service(config, env=plugin_env())
    running.wait_started()
    wait_for(lambda: len(events(tmp_path)) == 4, message="four ticks")
    assert running.terminate() == 0
    assert sorted(e["tick"] for e in events(tmp_path)) == [0, 1, 2, 3]
    assert {e["source"] for e in events(tmp_path)} == {"record-ticker"}

    # Its checkpoints live in the state store like a built-in's: a restart emits nothing new.
    again = service(config, env=plugin_env())
    again.wait_started()
    assert again.terminate() == 0
    assert len(events(tmp_path)) == 4


def test_validate_sees_the_plugins_fields(tmp_path: Path) -> None:
    config = pipeline(tmp_path, extra='colour = "red"')
    result = subprocess.run(
        [sys.executable, "-m", "streamfn", "validate", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **plugin_env()},
        timeout=60,
    )
    assert result.returncode == 2
    assert "event_sources[0].colour: unknown field; allowed fields: function" in result.stderr
    assert "count, fail_after" in result.stderr


def test_a_failing_source_stops_the_service_with_its_name(tmp_path: Path, service) -> None:
    config = pipeline(tmp_path, extra="fail_after = true")
    running = service(config, env=plugin_env())
    assert running.process is not None
    code = running.process.wait(timeout=30)
    assert code == 1
    assert "event source record-ticker failed: ticker lost its clock" in running.stderr

    # What it emitted before failing is durable: the next start delivers the rest, once.
    pipeline(tmp_path)
    again = service(config, env=plugin_env())
    again.wait_started()
    wait_for(lambda: len(events(tmp_path)) == 4, message="all four ticks")
    assert again.terminate() == 0
    assert sorted(e["tick"] for e in events(tmp_path)) == [0, 1, 2, 3]


def test_an_unexpected_failure_shows_its_traceback_once_and_a_one_line_cause(
    tmp_path: Path, service
) -> None:
    config = pipeline(tmp_path, extra="crash = true")
    running = service(config, env=plugin_env())
    assert running.process is not None
    assert running.process.wait(timeout=30) == 1
    err = running.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    assert "TaskGroup" not in err and "sub-exception" not in err, err
    last = err.strip().splitlines()[-1]
    connector = PLUGINS / "ticker_connector.py"
    assert last.startswith(
        f"streamfn: event source record-ticker failed: KeyError: 'interval' ({connector}:"
    ), last
    assert last.endswith(", in _read_settings)"), last
