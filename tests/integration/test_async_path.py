"""The durable async path through a real service: retries, destinations, event age."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import anyio
import pytest
from conftest import wait_for

from streamfn.state.sqlite import open_sqlite_store

FAILING = """
import os
from pathlib import Path

def handler(event, context):
    fd = os.open(Path(__file__).parent / "attempts.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (context.aws_request_id + "\\n").encode())
    os.close(fd)
    raise ValueError("cannot process " + event["Records"][0]["s3"]["object"]["key"])
"""

RECORDER = """
import json, os
from pathlib import Path

def handler(event, context):
    fd = os.open(Path(__file__).parent / "recorded.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(event) + "\\n").encode())
    os.close(fd)
    return {"recorded": True}
"""


def records(directory: Path) -> list[dict]:
    if not directory.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def write_pipeline(tmp_path: Path, body: str, runtime: str = "python") -> Path:
    (tmp_path / "failing.py").write_text(FAILING)
    (tmp_path / "recorder.py").write_text(RECORDER)
    (tmp_path / "inbox").mkdir(exist_ok=True)
    config = tmp_path / "streamfn.toml"
    config.write_text(body.replace('handler = "', f'runtime = "{runtime}"\nhandler = "'))
    return config


def test_a_failing_handler_is_retried_then_recorded_as_retries_exhausted(
    tmp_path: Path, service, function_runtime: str
) -> None:
    config = write_pipeline(
        tmp_path,
        runtime=function_runtime,
        body="""
[functions.broken]
handler = "failing:handler"
[functions.broken.async]
maximum_retry_attempts = 2
retry_delay = 0.2
on_failure = "dir:failed"

[functions.ok]
handler = "recorder:handler"
[functions.ok.async]
on_success = "dir:succeeded"

[[event_sources]]
function = "broken"
type = "filedrop"
path = "inbox"
prefix = "bad"

[[event_sources]]
function = "ok"
type = "filedrop"
path = "inbox"
prefix = "good"
stable_for = 0.2
""",
    )
    running = service(config)
    running.wait_started()
    (tmp_path / "inbox" / "bad.txt").write_text("x")
    (tmp_path / "inbox" / "good.txt").write_text("y")

    failed = wait_for(lambda: records(tmp_path / "failed"), timeout=30, message="failure record")
    succeeded = wait_for(
        lambda: records(tmp_path / "succeeded"), timeout=30, message="success record"
    )
    assert running.terminate() == 0

    [record] = failed
    attempts = (tmp_path / "attempts.log").read_text().split()
    assert len(attempts) == 3  # the first attempt and two retries
    assert set(attempts) == {record["requestContext"]["requestId"]}  # one requestId throughout
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    assert record["requestContext"]["functionArn"] == (
        "arn:aws:lambda:local:000000000000:function:broken:$LATEST"
    )
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "bad.txt"
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "cannot process bad.txt"

    [success] = succeeded
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestContext"]["approximateInvokeCount"] == 1
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] == {"recorded": True}


def test_a_failure_destination_can_be_another_function(tmp_path: Path, service) -> None:
    config = write_pipeline(
        tmp_path,
        """
[functions.broken]
handler = "failing:handler"
[functions.broken.async]
maximum_retry_attempts = 0
on_failure = "function:dlq"

[functions.dlq]
handler = "recorder:handler"

[[event_sources]]
function = "broken"
type = "filedrop"
path = "inbox"
stable_for = 0.2
""",
    )
    running = service(config)
    running.wait_started()
    (tmp_path / "inbox" / "one.txt").write_text("x")
    log = tmp_path / "recorded.log"
    wait_for(log.exists, timeout=30, message="the dlq function to run")
    assert running.terminate() == 0
    [line] = log.read_text().splitlines()
    record = json.loads(line)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "one.txt"


@pytest.mark.anyio
async def test_an_event_older_than_the_maximum_age_is_recorded_as_event_age_exceeded(
    tmp_path: Path, service
) -> None:
    config = write_pipeline(
        tmp_path,
        """
[service]
state_dir = "state"

[functions.ok]
handler = "recorder:handler"
[functions.ok.async]
maximum_event_age = 60
on_failure = "dir:failed"
""",
    )
    # Events queued before the service went down for two minutes (written through the
    # store's public API, as the service would have written them).
    (tmp_path / "state").mkdir()
    async with open_sqlite_store(tmp_path / "state" / "state.db") as store:
        for name, age in (("old", 120.0), ("fresh", 1.0)):
            await store.enqueue(
                function="ok",
                payload=json.dumps({"name": name}).encode(),
                request_id=str(uuid.uuid4()),
                idempotency_key=name,
                idempotency_ttl=3600,
                now=time.time() - age,
            )

    running = service(config)
    running.wait_started()
    failed = await anyio.to_thread.run_sync(
        lambda: wait_for(lambda: records(tmp_path / "failed"), timeout=30, message="record")
    )
    log = tmp_path / "recorded.log"
    await anyio.to_thread.run_sync(lambda: wait_for(log.exists, message="the fresh event"))
    assert running.terminate() == 0

    [record] = failed
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"name": "old"}
    assert "responseContext" not in record and "responsePayload" not in record
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"name": "fresh"}]


@pytest.mark.anyio
async def test_an_event_of_a_function_not_in_the_config_does_not_stop_the_service(
    tmp_path: Path, service
) -> None:
    """Review C3: such an event raised KeyError in a worker and crash-looped the engine."""
    config = write_pipeline(
        tmp_path,
        """
[service]
state_dir = "state"

[functions.ok]
handler = "recorder:handler"

[[event_sources]]
function = "ok"
type = "filedrop"
path = "inbox"
stable_for = 0.2
""",
    )
    (tmp_path / "state").mkdir()
    async with open_sqlite_store(tmp_path / "state" / "state.db") as store:
        await store.enqueue(
            function="removed",  # a function an earlier config had
            payload=b"{}",
            request_id=str(uuid.uuid4()),
            idempotency_key="left-behind",
            idempotency_ttl=3600,
            now=time.time(),
        )
    running = service(config)
    running.wait_started()
    (tmp_path / "inbox" / "one.txt").write_text("x")
    log = tmp_path / "recorded.log"
    await anyio.to_thread.run_sync(lambda: wait_for(log.exists, message="the known function"))
    assert running.terminate() == 0  # it was still running: a clean stop
    assert "KeyError" not in running.stderr
    async with open_sqlite_store(tmp_path / "state" / "state.db") as store:
        assert await store.pending() == 1  # left for an instance that runs it (or aging out)
