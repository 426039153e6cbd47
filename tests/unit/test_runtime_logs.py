"""START / END / REPORT lines and Lambda's error bodies, exactly as AWS writes them."""

from __future__ import annotations

import json

import pytest

from streamfn.runtime import logs
from streamfn.types import Report

RID = "8f507cfc-xmpl-4697-b07a-ac58fc914c95"


def test_start_and_end_lines() -> None:
    assert logs.start_line(RID) == f"START RequestId: {RID} Version: $LATEST"
    assert logs.start_line(RID, "3") == f"START RequestId: {RID} Version: 3"
    assert logs.end_line(RID) == f"END RequestId: {RID}"


def test_report_line_is_tab_separated_with_init_duration_last() -> None:
    report = Report(
        duration_ms=15.7449,
        billed_duration_ms=16,
        memory_size_mb=128,
        max_memory_used_mb=56,
        init_duration_ms=130.487,
    )
    assert logs.report_line(RID, report) == (
        f"REPORT RequestId: {RID}\tDuration: 15.74 ms\tBilled Duration: 16 ms"
        "\tMemory Size: 128 MB\tMax Memory Used: 56 MB\tInit Duration: 130.49 ms"
    )


def test_report_line_of_a_warm_invocation_has_no_init_duration() -> None:
    report = Report(duration_ms=2, billed_duration_ms=2, memory_size_mb=256, max_memory_used_mb=60)
    assert logs.report_line(RID, report) == (
        f"REPORT RequestId: {RID}\tDuration: 2.00 ms\tBilled Duration: 2 ms"
        "\tMemory Size: 256 MB\tMax Memory Used: 60 MB"
    )


def test_report_line_of_a_timeout_ends_with_status() -> None:
    report = Report(
        duration_ms=3000.0,
        billed_duration_ms=3000,
        memory_size_mb=128,
        max_memory_used_mb=40,
        init_duration_ms=99.5,
        timed_out=True,
    )
    line = logs.report_line(RID, report)
    assert line.endswith("\tMax Memory Used: 40 MB\tInit Duration: 99.50 ms\tStatus: timeout")


@pytest.mark.parametrize(
    ("duration", "timeout", "billed"),
    [
        (15.74, None, 16),
        (16.0, None, 16),
        (15.001, None, 15),  # shown as 15.00 ms: billed as shown
        (0.2, None, 1),  # at least 1 ms
        (3000.71, 3, 3000),  # a timeout bills the timeout
    ],
)
def test_billed_duration_rounds_up_whole_milliseconds(
    duration: float, timeout: int | None, billed: int
) -> None:
    assert logs.billed_duration(duration, timeout=timeout) == billed


@pytest.mark.parametrize(
    ("duration", "timeout", "init", "billed"),
    [
        (15.74, None, 130.49, 147),  # a cold start bills its init phase (AWS, 2025-08-01)
        (15.74, None, None, 16),  # warm (and provisioned: no init reported)
        (3000.71, 3, 250.0, 3250),  # a timed-out cold start: the timeout plus the init
    ],
)
def test_billed_duration_includes_the_init_phase_of_a_cold_start(
    duration: float, timeout: int | None, init: float | None, billed: int
) -> None:
    assert logs.billed_duration(duration, timeout=timeout, init_duration_ms=init) == billed


def test_platform_records_of_the_json_format() -> None:
    now = 1_665_532_875.0  # 2022-10-12T00:01:15.000Z
    report = Report(
        duration_ms=693.924,
        billed_duration_ms=694,
        memory_size_mb=128,
        max_memory_used_mb=84,
        init_duration_ms=397.68,
    )
    assert json.loads(logs.platform_start(RID, now)) == {
        "time": "2022-10-12T00:01:15.000Z",
        "type": "platform.start",
        "record": {"requestId": RID, "version": "$LATEST"},
    }
    assert json.loads(
        logs.platform_report(RID, report, now, status="success", error_type=None)
    ) == {
        "time": "2022-10-12T00:01:15.000Z",
        "type": "platform.report",
        "record": {
            "requestId": RID,
            "metrics": {
                "durationMs": 693.92,
                "billedDurationMs": 694,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 84,
                "initDurationMs": 397.68,
            },
            "status": "success",
        },
    }
    failed = json.loads(logs.platform_report(RID, report, now, status="error", error_type="E"))
    assert (failed["record"]["status"], failed["record"]["errorType"]) == ("error", "E")


def test_json_error_line_is_the_runtimes_record() -> None:
    error = logs.fault_object("boom", "ValueError", ["  File x\n"], request_id=RID)
    line = logs.json_error_line(error, 1_704_067_200.5)
    assert line == (
        '{"timestamp": "2024-01-01T00:00:00Z", "level": "ERROR", "errorMessage": "boom", '
        f'"errorType": "ValueError", "requestId": "{RID}", "stackTrace": ["  File x\\n"]}}'
    )


def test_timeout_message_body_and_log_line() -> None:
    assert logs.timeout_message(3) == "Task timed out after 3.00 seconds"
    assert json.loads(logs.timeout_payload(RID, 900)) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {RID} Error: Task timed out after 900.00 seconds",
    }
    assert logs.timeout_log_line(RID, 3, 1_580_428_800.25) == (
        f"2020-01-31T00:00:00.250Z {RID} Task timed out after 3.00 seconds"
    )


def _fails() -> None:
    config: dict[str, str] = {}
    print(config["TABLE_NAME"] + "!")


def test_error_object_has_aws_keys_and_formatted_frames() -> None:
    try:
        _fails()
    except KeyError as exc:
        payload = logs.error_payload(exc, request_id=RID)
    error = json.loads(payload)
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorMessage"] == "'TABLE_NAME'"
    assert error["errorType"] == "KeyError"
    assert error["requestId"] == RID
    last = error["stackTrace"][-1]
    assert last.startswith(f'  File "{__file__}", line ')
    # as AWS formats frames: file, line, function and code, without Python 3.11's ^^^ marks
    assert last.endswith(', in _fails\n    print(config["TABLE_NAME"] + "!")\n')


def test_error_log_lines_follow_the_aws_runtime() -> None:
    error = logs.fault_object("boom", "ValueError", ['  File "f.py", line 3, in h\n    x()\n'])
    assert logs.error_log_lines(error) == [
        "[ERROR] ValueError: boom",
        "Traceback (most recent call last):",
        '  File "f.py", line 3, in h',
        "    x()",
    ]
    assert logs.error_log_lines({"errorType": "Runtime.ExitError"}) == ["[ERROR] Runtime.ExitError"]


def test_exit_payload() -> None:
    assert json.loads(logs.exit_payload(RID, 2)) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {RID} Error: Runtime exited with error: exit status 2",
    }
