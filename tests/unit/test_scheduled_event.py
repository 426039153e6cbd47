"""The Scheduled Event a cron-triggered function receives, field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from connectors.cron.event import schedule_arn, scheduled_event

ARN = "arn:aws:events:us-east-2:123456789012:rule/my-schedule"
TICK = datetime(2019, 3, 1, 1, 23, 45, tzinfo=UTC)


def make(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "event_id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
        "time": TICK,
        "rule_arn": ARN,
        "region": "us-east-2",
        "account": "123456789012",
    }
    arguments.update(overrides)
    return scheduled_event(**arguments)  # type: ignore[arg-type]


def test_matches_the_aws_documented_event_exactly() -> None:
    assert make() == {
        "version": "0",
        "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2019-03-01T01:23:45Z",
        "region": "us-east-2",
        "resources": [ARN],
        "detail": {},
    }


def test_keys_come_in_the_envelope_order() -> None:
    assert list(make()) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]


def test_is_plain_json() -> None:
    assert json.loads(json.dumps(make())) == make()


def test_defaults_to_the_local_region_and_zero_account() -> None:
    event = scheduled_event(event_id="e-1", time=TICK, rule_arn=schedule_arn("nightly"))
    assert event["region"] == "local"
    assert event["account"] == "000000000000"
    assert event["resources"] == ["arn:aws:events:local:000000000000:rule/nightly"]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2019, 3, 1, 1, 23, 45, 999_999, tzinfo=UTC), "2019-03-01T01:23:45Z"),
        (datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")), "2026-10-25T00:30:00Z"),
        (
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
            "2026-10-25T01:30:00Z",
        ),
        (datetime(2026, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=5))), "2026-01-01T00:00:00Z"),
    ],
)
def test_time_is_utc_to_the_second_with_z(moment: datetime, expected: str) -> None:
    assert make(time=moment)["time"] == expected


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make(time=datetime(2019, 3, 1, 1, 23, 45))


def test_each_event_has_its_own_empty_detail_and_resources() -> None:
    first, second = make(), make()
    assert first["detail"] is not second["detail"]
    assert first["resources"] is not second["resources"]


def test_schedule_arn() -> None:
    assert schedule_arn("my-schedule") == "arn:aws:events:local:000000000000:rule/my-schedule"
    assert schedule_arn("r", region="eu-west-1", account="123456789012") == (
        "arn:aws:events:eu-west-1:123456789012:rule/r"
    )
