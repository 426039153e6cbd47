"""One function whose handler cannot be imported, through a real `streamfn run` process:
the service starts, the good function runs, the broken one's events reach on_failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import wait_for

GOOD = """
import os
from pathlib import Path

def handler(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    fd = os.open(Path(__file__).parent / "good.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (key + "\\n").encode())
    os.close(fd)
    return {"key": key}
"""

BROKEN = {
    "missing": ("nomodule:handler", "Runtime.ImportModuleError"),
    "syntax": ("syntaxbad:handler", "Runtime.UserCodeSyntaxError"),
    "attribute": ("good:nothere", "Runtime.HandlerNotFound"),
    "raising": ("raising:handler", "RuntimeError"),
}

CONFIG = """
[service]
drain_timeout = 5

[functions.good]
runtime = "{runtime}"
handler = "good:handler"

[functions.broken]
runtime = "{runtime}"
handler = "{handler}"
[functions.broken.async]
maximum_retry_attempts = 0
retry_delay = 0.1
on_failure = "dir:failed"

[[event_sources]]
function = "good"
type = "filedrop"
path = "good-inbox"
stable_for = 0.2

[[event_sources]]
function = "broken"
type = "filedrop"
path = "broken-inbox"
stable_for = 0.2
"""


def write_project(tmp_path: Path, runtime: str, handler: str) -> Path:
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "syntaxbad.py").write_text("def handler(event, context)\n    return 1\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('no config at import')\n")
    (tmp_path / "good-inbox").mkdir()
    (tmp_path / "broken-inbox").mkdir()
    config = tmp_path / "streamfn.toml"
    config.write_text(CONFIG.format(runtime=runtime, handler=handler))
    return config


def records(directory: Path) -> list[dict]:
    if not directory.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


@pytest.mark.parametrize("kind", ["missing", "syntax", "attribute", "raising"])
def test_a_broken_handler_fails_only_its_own_events(
    tmp_path: Path, service, function_runtime: str, kind: str
) -> None:
    handler, error_type = BROKEN[kind]
    config = write_project(tmp_path, function_runtime, handler)
    running = service(config)
    running.wait_started()
    (tmp_path / "good-inbox" / "a.txt").write_text("a")
    (tmp_path / "broken-inbox" / "b.txt").write_text("b")

    good = tmp_path / "good.log"
    wait_for(lambda: good.exists() and good.read_text() == "a.txt\n", message="good handler ran")
    failed = wait_for(lambda: records(tmp_path / "failed"), message="on_failure record")
    assert running.terminate() == 0

    [record] = failed  # type: ignore[misc]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "b.txt"
    assert record["responsePayload"]["errorType"] == error_type
    startup = [line for line in running.stderr.splitlines() if "cannot be imported" in line]
    assert len(startup) == 1, running.stderr  # logged once, at startup
    assert f"function 'broken': handler '{handler}'" in startup[0]
    assert error_type in startup[0]


def test_strict_keeps_the_fail_fast_start(tmp_path: Path, service) -> None:
    config = write_project(tmp_path, "python", "nomodule:handler")
    running = service(config, args=("--strict",))
    assert running.process is not None
    assert running.process.wait(timeout=60) == 1
    assert "handler 'nomodule:handler': Runtime.ImportModuleError" in running.stderr
