"""Failures reach the user as one line naming the cause and where it was raised, with the
traceback logged once; exception groups from task groups never show."""

from __future__ import annotations

import json
import logging

import pytest

from streamfn.errors import (
    EngineError,
    SourceError,
    StateError,
    describe,
    leaves,
    stopped_by,
    summary,
)

log = logging.getLogger("test.errors")


def failing_lookup() -> None:
    json.loads("{}")["missing"]


def key_error() -> KeyError:
    try:
        failing_lookup()
    except KeyError as exc:
        return exc
    raise AssertionError("no error")


def test_leaves_unwrap_nested_groups_in_order() -> None:
    a, b, c = ValueError("a"), KeyError("b"), StateError("c")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [a, b]), c])
    assert leaves(group) == [a, b, c]
    assert leaves(a) == [a]


def test_describe_names_the_type_message_and_the_raising_line() -> None:
    text = describe(key_error())
    assert text.startswith("KeyError: 'missing' (")
    assert f"{__file__}:" in text and "in failing_lookup)" in text
    assert describe(SourceError("broker unreachable")) == "broker unreachable"


def test_describe_skips_frames_of_the_standard_library() -> None:
    try:
        json.loads("{")
    except json.JSONDecodeError as caught:
        exc = caught
    # Raised inside json's decoder; the line named is this test's call.
    assert f"{__file__}:" in describe(exc)
    assert "in test_describe_skips_frames_of_the_standard_library)" in describe(exc)


def test_summary_counts_the_other_leaves() -> None:
    group = ExceptionGroup("g", [SourceError("first"), ValueError("second")])
    assert summary(group) == "first (and 1 more error(s), logged above)"


def test_an_unexpected_error_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.errors")
    exc = key_error()
    error = stopped_by(ExceptionGroup("unhandled errors in a TaskGroup", [exc]), log)
    assert isinstance(error, EngineError)
    assert str(error) == f"stopped by {describe(exc)}"
    assert error.__cause__ is exc
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [exc]
    assert "TaskGroup" not in caplog.text and "TaskGroup" not in str(error)


def test_a_streamfn_error_passes_through_with_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.errors")
    state = StateError("database is locked")
    assert stopped_by(ExceptionGroup("g", [ExceptionGroup("h", [state])]), log) is state
    assert caplog.records == []  # the caller prints it; the traceback is at DEBUG only


def test_a_named_part_is_named_in_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.errors")
    error = stopped_by(SourceError("lost its clock"), log, "event source t failed")
    assert str(error) == "event source t failed: lost its clock"
    assert [r.getMessage() for r in caplog.records] == ["event source t failed: lost its clock"]
    assert all(r.exc_info is None for r in caplog.records)
