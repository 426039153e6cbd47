"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

HANDLERS = """
import time
from pathlib import Path

def echo(event, context):
    return {"event": event, "function": context.function_name,
            "arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb}

def boom(event, context):
    raise KeyError("missing")

def slow(event, context):
    time.sleep(1.5)
    (Path(__file__).parent / "slow.done").write_text(event["Records"][0]["s3"]["object"]["key"])
"""

CONFIG = """
[functions.echo]
handler = "handlers:echo"
memory_size = 256

[functions.boom]
handler = "handlers:boom"
"""


def streamfn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfn", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def project(tmp_path: Path, config: str = CONFIG) -> Path:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    (tmp_path / "streamfn.toml").write_text(config)
    return tmp_path


def test_invoke_prints_the_result(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    result = streamfn("invoke", "echo", "--payload", '{"a": 1}', cwd=cwd)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output == {
        "event": {"a": 1},
        "function": "echo",
        "arn": "arn:aws:lambda:local:000000000000:function:echo",
        "memory": output["memory"],
    }
    assert str(output["memory"]) == "256"


def test_invoke_reads_the_payload_from_a_file(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    (tmp_path / "event.json").write_text('{"from": "file"}')
    result = streamfn("invoke", "echo", "--payload", "@event.json", cwd=cwd)
    assert json.loads(result.stdout)["event"] == {"from": "file"}


def test_invoke_exits_1_on_a_function_error(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    result = streamfn("invoke", "boom", cwd=cwd)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("KeyError", "'missing'")


@pytest.mark.parametrize("runtime", ["python", "inline"])
def test_invoke_works_beside_a_broken_handler_and_reports_the_broken_one(
    tmp_path: Path, runtime: str
) -> None:
    config = CONFIG.replace("handlers:boom", "nomodule:handler").replace(
        'handler = "', f'runtime = "{runtime}"\nhandler = "'
    )
    cwd = project(tmp_path, config)
    good = streamfn("invoke", "echo", "--payload", '{"a": 1}', cwd=cwd)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["event"] == {"a": 1}
    broken = streamfn("invoke", "boom", cwd=cwd)
    assert broken.returncode == 1, broken.stderr
    error = json.loads(broken.stdout)
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == (
        "Unable to import module 'nomodule': No module named 'nomodule'"
    )
    assert error["requestId"] and error["stackTrace"] == []


def test_invoke_rejects_bad_payloads_and_unknown_functions(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    bad = streamfn("invoke", "echo", "--payload", "{nope", cwd=cwd)
    assert bad.returncode == 2 and "--payload is not valid JSON" in bad.stderr
    unknown = streamfn("invoke", "ghost", cwd=cwd)
    assert unknown.returncode == 2 and "no function 'ghost'; defined: boom, echo" in unknown.stderr


def test_validate_reports_ok_and_errors(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    ok = streamfn("validate", cwd=cwd)
    assert ok.returncode == 0 and "ok (2 function(s), 0 event source(s))" in ok.stdout
    (tmp_path / "streamfn.toml").write_text(
        CONFIG.replace("memory_size = 256", "memory_size = 99999")
    )
    bad = streamfn("validate", cwd=cwd)
    assert bad.returncode == 2
    assert (
        "streamfn.toml: functions.echo.memory_size: expected `int` <= 10240 (got 99999)"
        in bad.stderr
    )


def test_run_strict_reports_handler_import_errors_at_startup(tmp_path: Path) -> None:
    cwd = project(tmp_path, CONFIG.replace("handlers:boom", "handlers:nothere"))
    result = streamfn("run", "--strict", cwd=cwd)
    assert result.returncode == 1
    assert "handler 'handlers:nothere': Runtime.HandlerNotFound" in result.stderr
    missing = project(tmp_path, CONFIG.replace("handlers:boom", "nomodule:handler"))
    result = streamfn("run", "--strict", cwd=missing)
    assert result.returncode == 1
    assert "handler 'nomodule:handler': Runtime.ImportModuleError" in result.stderr


def test_test_pattern_answers_like_eventbridge(tmp_path: Path) -> None:
    pattern = '{"detail": {"amount": [{"numeric": [">", 10]}]}}'
    yes = streamfn("test-pattern", pattern, '{"detail": {"amount": 11}}', cwd=tmp_path)
    assert (yes.returncode, yes.stdout.strip()) == (0, "true")
    no = streamfn("test-pattern", pattern, '{"detail": {"amount": 1}}', cwd=tmp_path)
    assert (no.returncode, no.stdout.strip()) == (1, "false")
    bad = streamfn("test-pattern", '{"detail": 5}', "{}", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid pattern: detail:" in bad.stderr


def test_sigterm_lets_in_flight_invocations_finish(tmp_path: Path, service) -> None:
    cwd = project(
        tmp_path,
        """
[functions.slow]
handler = "handlers:slow"
timeout = 5

[[event_sources]]
function = "slow"
type = "filedrop"
path = "inbox"
stable_for = 0.1
""",
    )
    (tmp_path / "inbox").mkdir()
    running = service(cwd / "streamfn.toml")
    running.wait_started()
    (tmp_path / "inbox" / "a.txt").write_text("x")
    wait_for(lambda: "START RequestId" in running.stdout, message="the invocation to start")
    assert running.terminate() == 0
    assert (tmp_path / "slow.done").read_text() == "a.txt"
    assert "REPORT RequestId" in running.stdout


def test_python_dash_m_is_the_same_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "streamfn"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "run" in result.stdout and "test-pattern" in result.stdout
