"""Schedule expressions (rate/cron/at/crontab), their ticks across DST, and plan_tick."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connectors.cron.schedule import (
    DEFAULT_GRACE,
    AtSchedule,
    CronSchedule,
    RateSchedule,
    Schedule,
    TickPlan,
    parse_schedule,
    plan_tick,
)
from streamfn.errors import InvalidScheduleError, StreamfnError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def ticks(schedule: Schedule, after: datetime, count: int) -> list[datetime | None]:
    found: list[datetime | None] = []
    cursor: datetime | None = after
    while cursor is not None and len(found) < count:
        cursor = schedule.next_after(cursor)
        found.append(cursor)
    return found


def local_ticks(expression: str, timezone: str, after: datetime, count: int) -> list[str]:
    zone = ZoneInfo(timezone)
    schedule = parse_schedule(expression, timezone)
    return [t.astimezone(zone).isoformat() if t else "never" for t in ticks(schedule, after, count)]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("expression", "period"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(30 seconds)", timedelta(seconds=30)),
        ("rate(1 second)", timedelta(seconds=1)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(2 hours)", timedelta(hours=2)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(3 days)", timedelta(days=3)),
        ("  rate(10   minutes) ", timedelta(minutes=10)),
    ],
)
def test_rate_expressions(expression: str, period: timedelta) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, RateSchedule)
    assert schedule.period == period
    assert schedule.expression == expression.strip()


def test_each_syntax_gives_its_kind() -> None:
    assert isinstance(parse_schedule("cron(0 12 * * ? *)"), CronSchedule)
    assert isinstance(parse_schedule("*/5 * * * *"), CronSchedule)
    assert isinstance(parse_schedule("at(2026-12-01T00:00:00)"), AtSchedule)
    schedule = parse_schedule("cron(0 12 * * ? *)", "Europe/Berlin")
    assert (schedule.expression, schedule.timezone) == ("cron(0 12 * * ? *)", "Europe/Berlin")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("rate(1 minutes)", "use the singular unit 'minute' when the value is 1"),
        ("rate(1 days)", "use the singular unit 'day' when the value is 1"),
        ("rate(5 minute)", "use the plural unit 'minutes' when the value is not 1"),
        ("rate(2 hour)", "use the plural unit 'hours' when the value is not 1"),
        ("rate(0 minutes)", "value must be a positive integer (got '0')"),
        ("rate(05 minutes)", "value must be a positive integer (got '05')"),
        ("rate(-5 minutes)", "value must be a positive integer (got '-5')"),
        ("rate(1.5 hours)", "value must be a positive integer (got '1.5')"),
        ("rate(5 weeks)", "unit must be second(s), minute(s), hour(s) or day(s) (got 'weeks')"),
        ("rate(5 Minutes)", "unit must be second(s), minute(s), hour(s) or day(s) (got 'Minutes')"),
        ("rate(5)", "expected rate(VALUE UNIT), e.g. rate(5 minutes)"),
        ("rate(5 minutes", "missing closing parenthesis"),
        (
            "cron(0 12 * * * *)",
            "day-of-month and day-of-week cannot both be specified; use ? in one of them",
        ),
        (
            "cron(0 12 1 * MON *)",
            "day-of-month and day-of-week cannot both be specified; use ? in one of them",
        ),
        (
            "cron(0 12 ? * ? *)",
            "day-of-month and day-of-week cannot both be ?; give a value in one of them",
        ),
        (
            "cron(0 12 * * ?)",
            "expected 6 fields (minutes hours day-of-month month day-of-week year), got 5",
        ),
        ("cron(60 12 * * ? *)", "minutes value 60 is out of range 0-59"),
        ("cron(0 24 * * ? *)", "hours value 24 is out of range 0-23"),
        ("cron(0 12 0 * ? *)", "day-of-month value 0 is out of range 1-31"),
        ("cron(0 12 32 * ? *)", "day-of-month value 32 is out of range 1-31"),
        ("cron(0 12 * 13 ? *)", "month value 13 is out of range 1-12"),
        ("cron(0 12 * FOO ? *)", "month: 'FOO' is not a number or a name"),
        ("cron(0 12 ? * 0 *)", "day-of-week value 0 is out of range 1-7"),
        ("cron(0 12 ? * 8 *)", "day-of-week value 8 is out of range 1-7"),
        ("cron(0 12 * * ? 1969)", "year value 1969 is out of range 1970-2199"),
        ("cron(0 12 * * ? 2200)", "year value 2200 is out of range 1970-2199"),
        ("cron(0 20-10 * * ? *)", "hours range 20-10 runs backwards"),
        ("cron(0/0 12 * * ? *)", "minutes increment value 0 is out of range 1-60"),
        ("cron(1,,2 12 * * ? *)", "minutes: '' is not a number"),
        ("cron(0 12 30 2 ? *)", "day-of-month 30 never occurs in the selected months"),
        ("cron(0 12 31 APR,JUN ? *)", "day-of-month 31 never occurs in the selected months"),
        ("cron(0 12 30W FEB ? *)", "day-of-month 30 never occurs in the selected months"),
        ("cron(0 12 32W * ? *)", "day-of-month value 32 is out of range 1-31"),
        ("cron(0 12 L,15 * ? *)", "day-of-month: L, LW and nW must stand alone"),
        ("cron(0 12 L-2 * ? *)", "day-of-month: L, LW and nW must stand alone"),
        ("cron(0 12 ? * 3#6 *)", "day-of-week occurrence value 6 is out of range 1-5"),
        ("cron(0 12 ? * 3#1,6#3 *)", "day-of-week: '#' and 'L' expressions must stand alone"),
        ("cron(0 12 ? * 1/2 *)", "day-of-week does not allow '/'"),
        ("cron(0 12 ? * 9L *)", "day-of-week value 9 is out of range 1-7"),
        ("at(2026-13-01T00:00:00)", "2026-13-01T00:00:00 is not a valid date and time"),
        ("at(2026-02-30T00:00:00)", "2026-02-30T00:00:00 is not a valid date and time"),
        ("at(2026-12-01 00:00:00)", "expected at(yyyy-mm-ddThh:mm:ss)"),
        ("at(2026-12-01T00:00)", "expected at(yyyy-mm-ddThh:mm:ss)"),
        ("*/5 * * *", "expected rate(...), cron(...), at(...) or a 5-field crontab line"),
        ("every day", "expected rate(...), cron(...), at(...) or a 5-field crontab line"),
        ("", "expected rate(...), cron(...), at(...) or a 5-field crontab line"),
        (
            "*/5 * * * 8",
            "Bad day-of-week (crontab fields: minute hour day-of-month month day-of-week)",
        ),
        ("61 * * * *", "Bad minute (crontab fields: minute hour day-of-month month day-of-week)"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, problem: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_schedule(expression)
    assert str(caught.value) == f"{expression.strip()}: {problem}"
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, StreamfnError)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "europe/berlin"])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_schedule("rate(1 hour)", zone)
    assert str(caught.value) == (
        f"rate(1 hour): unknown time zone {zone!r} (expected an IANA name)"
    )


# --------------------------------------------------------------------------- rate


def test_rate_ticks_count_from_the_anchor() -> None:
    anchor = utc(2026, 1, 1, 12, 0, 7)
    schedule = parse_schedule("rate(5 minutes)", anchor=anchor)
    assert ticks(schedule, utc(2026, 1, 1, 12, 3), 2) == [
        utc(2026, 1, 1, 12, 5, 7),
        utc(2026, 1, 1, 12, 10, 7),
    ]
    assert schedule.next_after(utc(2026, 1, 1, 12, 5, 7)) == utc(2026, 1, 1, 12, 10, 7)
    assert schedule.next_after(utc(2025, 6, 1)) == anchor  # nothing before the anchor


def test_rate_default_anchor_is_the_epoch() -> None:
    schedule = parse_schedule("rate(1 hour)")
    assert schedule.next_after(utc(2026, 5, 5, 10, 59, 59)) == utc(2026, 5, 5, 11)


def test_moving_the_anchor_keeps_the_rate() -> None:
    schedule = parse_schedule("rate(2 hours)")
    assert isinstance(schedule, RateSchedule)
    moved = replace(schedule, anchor=datetime(2026, 1, 1, 1, 30, tzinfo=BERLIN))
    assert moved.period == timedelta(hours=2)
    assert moved.anchor == utc(2026, 1, 1, 0, 30)
    assert moved.next_after(utc(2026, 1, 1, 1)) == utc(2026, 1, 1, 2, 30)


def test_rate_days_are_24_real_hours_across_dst() -> None:
    schedule = parse_schedule(
        "rate(1 day)", "Europe/Berlin", anchor=datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    )
    # After the spring-forward the wall clock shows 13:00: AWS counts 24 hours, not noon.
    assert schedule.next_after(datetime(2026, 3, 28, 12, tzinfo=BERLIN)) == (
        datetime(2026, 3, 29, 13, tzinfo=BERLIN)
    )


def test_rate_latest_between_is_arithmetic() -> None:
    schedule = parse_schedule("rate(1 minute)", anchor=NEW_YEAR)
    assert schedule.latest_between(NEW_YEAR, utc(2027, 1, 1, 0, 0, 30)) == utc(2027, 1, 1)
    assert schedule.latest_between(utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 1, 59)) is None
    assert schedule.latest_between(utc(2020, 1, 1), utc(2025, 1, 1)) is None


# --------------------------------------------------------------------------- cron(...)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(0 10 * * ? *)", NEW_YEAR, ["2026-01-01T10:00", "2026-01-02T10:00"]),
        ("cron(0/15 * * * ? *)", NEW_YEAR, ["2026-01-01T00:15", "2026-01-01T00:30"]),
        (
            "cron(5/20 9 * * ? *)",
            NEW_YEAR,
            ["2026-01-01T09:05", "2026-01-01T09:25", "2026-01-01T09:45", "2026-01-02T09:05"],
        ),
        (
            "cron(0 8 1 JAN-MAR ? *)",
            NEW_YEAR,
            ["2026-01-01T08:00", "2026-02-01T08:00", "2026-03-01T08:00", "2027-01-01T08:00"],
        ),
        # L: the last day of the month, leap years included
        (
            "cron(0 10 L * ? *)",
            NEW_YEAR,
            ["2026-01-31T10:00", "2026-02-28T10:00", "2026-03-31T10:00"],
        ),
        ("cron(0 10 L 2 ? *)", utc(2027, 3, 1), ["2028-02-29T10:00"]),
        # LW: the last weekday (Jan 31 is a Saturday, May 31 a Sunday)
        (
            "cron(0 10 LW * ? *)",
            NEW_YEAR,
            [
                "2026-01-30T10:00",
                "2026-02-27T10:00",
                "2026-03-31T10:00",
                "2026-04-30T10:00",
                "2026-05-29T10:00",
            ],
        ),
        # nW: the weekday nearest day n, never crossing into another month
        (
            "cron(0 10 15W * ? *)",
            utc(2026, 1, 20),
            [
                "2026-02-16T10:00",
                "2026-03-16T10:00",
                "2026-04-15T10:00",
                "2026-05-15T10:00",
                "2026-06-15T10:00",
                "2026-07-15T10:00",
                "2026-08-14T10:00",
            ],
        ),
        (
            "cron(0 10 1W * ? *)",
            utc(2026, 7, 2),
            ["2026-08-03T10:00", "2026-09-01T10:00"],
        ),  # Aug 1: Sat
        (
            "cron(0 10 31W * ? *)",  # only months with a 31st; May 31 is a Sunday
            NEW_YEAR,
            [
                "2026-01-30T10:00",
                "2026-03-31T10:00",
                "2026-05-29T10:00",
                "2026-07-31T10:00",
                "2026-08-31T10:00",
            ],
        ),
        # #: the n-th given weekday of the month (3 = Tuesday in AWS numbering)
        (
            "cron(0 10 ? * 3#2 *)",
            NEW_YEAR,
            ["2026-01-13T10:00", "2026-02-10T10:00", "2026-03-10T10:00"],
        ),
        ("cron(0 10 ? * MON#1 *)", NEW_YEAR, ["2026-01-05T10:00", "2026-02-02T10:00"]),
        (
            "cron(0 10 ? * 6#5 *)",
            NEW_YEAR,
            ["2026-01-30T10:00", "2026-05-29T10:00", "2026-07-31T10:00"],
        ),
        # nL: the last given weekday of the month (6 = Friday); L alone: Saturday
        (
            "cron(0 10 ? * 6L *)",
            NEW_YEAR,
            ["2026-01-30T10:00", "2026-02-27T10:00", "2026-03-27T10:00"],
        ),
        ("cron(0 10 ? * FRIL *)", NEW_YEAR, ["2026-01-30T10:00"]),
        ("cron(0 10 ? * L *)", NEW_YEAR, ["2026-01-03T10:00", "2026-01-10T10:00"]),
        # AWS day-of-week numbering: 1 = Sunday ... 7 = Saturday
        ("cron(0 9 ? * 2 *)", NEW_YEAR, ["2026-01-05T09:00"]),  # Monday
        ("cron(0 9 ? * 1,7 *)", NEW_YEAR, ["2026-01-03T09:00", "2026-01-04T09:00"]),  # weekend
        (
            "cron(0 10 ? * 2-6 *)",
            NEW_YEAR,
            ["2026-01-01T10:00", "2026-01-02T10:00", "2026-01-05T10:00"],
        ),
        (
            "cron(0 10 ? * MON-FRI *)",
            NEW_YEAR,
            ["2026-01-01T10:00", "2026-01-02T10:00", "2026-01-05T10:00"],
        ),
        ("cron(0 10 ? * mon,wed *)", NEW_YEAR, ["2026-01-05T10:00", "2026-01-07T10:00"]),
        ("cron(0 10 ? jan,feb SUN *)", NEW_YEAR, ["2026-01-04T10:00"]),
        # years: lists, ranges, steps, and running out
        ("cron(0 0 1 1 ? 2027-2028)", NEW_YEAR, ["2027-01-01T00:00", "2028-01-01T00:00", "never"]),
        ("cron(0 0 1 1 ? 2030/5)", NEW_YEAR, ["2030-01-01T00:00", "2035-01-01T00:00"]),
        ("cron(0 0 1 1 ? 2020,2199)", NEW_YEAR, ["2199-01-01T00:00", "never"]),
        ("cron(0 0 1 1 ? 2020)", NEW_YEAR, ["never"]),
        ("cron(30 23 31 12 ? *)", utc(2199, 1, 1), ["2199-12-31T23:30", "never"]),
        # crontab: 0-7 with 0 and 7 both Sunday; both day fields restricted means OR
        ("0 9 * * 2", NEW_YEAR, ["2026-01-06T09:00"]),  # Tuesday, unlike AWS
        ("0 9 * * 0", NEW_YEAR, ["2026-01-04T09:00"]),
        ("0 9 * * 7", NEW_YEAR, ["2026-01-04T09:00"]),
        (
            "0 9 1,15 * MON",
            NEW_YEAR,
            ["2026-01-01T09:00", "2026-01-05T09:00", "2026-01-12T09:00", "2026-01-15T09:00"],
        ),
        ("*/5 * * * *", NEW_YEAR, ["2026-01-01T00:05", "2026-01-01T00:10"]),
        ("0 0 1 jan *", NEW_YEAR, ["2027-01-01T00:00"]),
    ],
)
def test_next_after(expression: str, after: datetime, expected: list[str]) -> None:
    found = ticks(parse_schedule(expression), after, len(expected))
    assert [t.strftime("%Y-%m-%dT%H:%M") if t else "never" for t in found] == expected


def test_next_after_is_strictly_after_and_answers_in_utc() -> None:
    schedule = parse_schedule("cron(0 10 * * ? *)", "Europe/Berlin")
    tick = schedule.next_after(datetime(2026, 1, 1, 9, tzinfo=BERLIN))
    assert tick == datetime(2026, 1, 1, 10, tzinfo=BERLIN)
    assert tick is not None and tick.tzinfo is UTC
    assert schedule.next_after(tick) == datetime(2026, 1, 2, 10, tzinfo=BERLIN)
    assert schedule.next_after(tick - timedelta(microseconds=1)) == tick


@pytest.mark.parametrize(
    "expression", ["rate(1 hour)", "cron(0 10 * * ? *)", "0 10 * * *", "at(2026-12-01T00:00:00)"]
)
def test_naive_datetimes_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule(expression).next_after(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- daylight saving


def test_aws_cron_daily_job_is_skipped_in_the_spring_gap() -> None:
    assert local_ticks(
        "cron(30 2 * * ? *)", "Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=BERLIN), 3
    ) == ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_aws_cron_daily_job_fires_once_in_the_fall_overlap() -> None:
    assert local_ticks(
        "cron(30 2 * * ? *)", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2
    ) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # Asked from inside the repeated hour, after the first 02:30: nothing more that day.
    schedule = parse_schedule("cron(30 2 * * ? *)", "Europe/Berlin")
    inside = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert schedule.next_after(inside) == datetime(2026, 10, 26, 2, 30, tzinfo=BERLIN)


def test_aws_cron_hourly_job_fires_every_real_hour_across_both_transitions() -> None:
    spring = local_ticks(
        "cron(0 * * * ? *)", "Europe/Berlin", datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN), 3
    )
    assert spring == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    fall = local_ticks(
        "cron(0 * * * ? *)", "Europe/Berlin", datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN), 3
    )
    assert fall == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_aws_cron_minutely_job_keeps_firing_through_the_repeated_hour() -> None:
    schedule = parse_schedule("cron(0/30 * * * ? *)", "Europe/Berlin")
    found = ticks(schedule, utc(2026, 10, 24, 23, 59), 6)
    assert found == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * k) for k in range(6)]


def test_aws_cron_in_new_york() -> None:
    start = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK)
    assert local_ticks("cron(30 2 * * ? *)", "America/New_York", start, 2) == [
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    start = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    assert local_ticks("cron(30 1 * * ? *)", "America/New_York", start, 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    hourly = local_ticks("cron(30 * * * ? *)", "America/New_York", start.replace(hour=23), 5)
    assert hourly[2:] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]


def test_crontab_fixed_time_job_runs_after_the_gap_and_once_in_the_overlap() -> None:
    spring = datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    assert local_ticks("30 2 * * *", "Europe/Berlin", spring, 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    fall = datetime(2026, 10, 24, 12, tzinfo=BERLIN)
    assert local_ticks("30 2 * * *", "Europe/Berlin", fall, 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    inside = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert parse_schedule("30 2 * * *", "Europe/Berlin").next_after(inside) == (
        datetime(2026, 10, 26, 2, 30, tzinfo=BERLIN)
    )


def test_crontab_hourly_job_fires_every_real_hour() -> None:
    fall = datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN)
    assert local_ticks("0 * * * *", "Europe/Berlin", fall, 3) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    hour = datetime(year, 1, 1, tzinfo=UTC)
    found = []
    while hour.year == year:
        if (
            hour.astimezone(zone).utcoffset()
            != (hour + timedelta(hours=1)).astimezone(zone).utcoffset()
        ):
            found.append(hour)
        hour += timedelta(hours=1)
    return found


ALL_HOURS = frozenset(range(24))


@pytest.mark.parametrize(
    ("expression", "minutes", "hours", "sundays_only", "repeats_once"),
    [
        ("cron(30 2 * * ? *)", {30}, {2}, False, True),
        ("cron(0 0 * * ? *)", {0}, {0}, False, True),
        ("cron(0 * * * ? *)", {0}, ALL_HOURS, False, False),
        ("cron(0/20 1-3 * * ? *)", {0, 20, 40}, {1, 2, 3}, False, True),
        ("cron(15,45 * ? * SUN *)", {15, 45}, ALL_HOURS, True, False),
        # crontab jobs with a "*" minute or hour run on real time (Debian's rule)
        ("*/20 1-3 * * *", {0, 20, 40}, {1, 2, 3}, False, False),
        ("15,45 * * * 0", {15, 45}, ALL_HOURS, True, False),
    ],
)
@pytest.mark.parametrize(
    "timezone", ["Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe"]
)
def test_cron_agrees_with_a_minute_by_minute_scan_around_transitions(
    expression: str,
    minutes: set[int],
    hours: frozenset[int],
    sundays_only: bool,
    repeats_once: bool,
    timezone: str,
) -> None:
    """The reference: every real minute whose wall clock matches fires. Wall times inside a
    gap never show, so they never fire. With ``repeats_once``, only the first of two
    repeated readings fires."""
    zone = ZoneInfo(timezone)
    schedule = parse_schedule(expression, timezone)
    for transition in _transitions(zone, 2026):
        start, end = transition - timedelta(hours=26), transition + timedelta(hours=26)
        expected = []
        minute = start + timedelta(minutes=1)
        while minute <= end:
            local = minute.astimezone(zone)
            repeated = local.fold == 1 and local.utcoffset() != local.replace(fold=0).utcoffset()
            if (
                local.minute in minutes
                and local.hour in hours
                and (not sundays_only or local.isoweekday() == 7)
                and not (repeated and repeats_once)
            ):
                expected.append(minute)
            minute += timedelta(minutes=1)
        found = [t for t in ticks(schedule, start, len(expected) + 1) if t and t <= end]
        assert found == expected, (timezone, transition)


# --------------------------------------------------------------------------- at(...)


def test_at_fires_once_at_local_time() -> None:
    schedule = parse_schedule("at(2026-12-01T00:00:00)", "America/New_York")
    assert ticks(schedule, NEW_YEAR, 2) == [utc(2026, 12, 1, 5), None]
    assert parse_schedule("at(2026-12-01T00:00:00)").next_after(NEW_YEAR) == utc(2026, 12, 1)


def test_at_in_the_past_never_fires() -> None:
    schedule = parse_schedule("at(2020-01-01T00:00:00)")
    assert schedule.next_after(NEW_YEAR) is None
    assert schedule.next_after(utc(2020, 1, 1)) is None  # strictly after
    assert schedule.next_after(utc(2019, 12, 31, 23, 59, 59)) == utc(2020, 1, 1)


def test_at_in_a_gap_fires_when_the_gap_ends_and_in_an_overlap_at_the_first() -> None:
    gap = parse_schedule("at(2026-03-29T02:30:15)", "Europe/Berlin")
    assert gap.next_after(NEW_YEAR) == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    overlap = parse_schedule("at(2026-10-25T02:30:00)", "Europe/Berlin")
    assert overlap.next_after(NEW_YEAR) == utc(2026, 10, 25, 0, 30)


# --------------------------------------------------------------------------- latest_between


@pytest.mark.parametrize(
    ("expression", "timezone"),
    [
        ("cron(0/7 9-17 ? * MON-FRI *)", "UTC"),
        ("cron(0 * 15W * ? *)", "Europe/Berlin"),
        ("15 */3 * * *", "America/New_York"),
        ("at(2026-01-20T10:00:00)", "UTC"),
    ],
)
def test_latest_between_matches_walking_forward(expression: str, timezone: str) -> None:
    schedule = parse_schedule(expression, timezone)
    every, cursor = [], schedule.next_after(NEW_YEAR)
    while cursor is not None and cursor <= utc(2026, 3, 1):
        every.append(cursor)
        cursor = schedule.next_after(cursor)
    chooser = random.Random(expression)
    for _ in range(40):
        lo = NEW_YEAR + timedelta(seconds=chooser.randrange(38 * 86400))
        hi = lo + timedelta(seconds=chooser.choice([30, 600, 86400, 20 * 86400]))
        inside = [t for t in every if lo < t <= hi]
        assert schedule.latest_between(lo, hi) == (inside[-1] if inside else None)


# --------------------------------------------------------------------------- plan_tick


@dataclass(frozen=True, kw_only=True)
class Counting(Schedule):
    """Counts next_after calls of the schedule it wraps."""

    inner: Schedule
    calls: list[datetime] = field(default_factory=list)

    def next_after(self, after: datetime) -> datetime | None:
        self.calls.append(after)
        return self.inner.next_after(after)


HOURLY = parse_schedule("cron(0 * * * ? *)")


def test_first_start_does_not_fire_past_ticks() -> None:
    started = utc(2026, 1, 1, 10, 30)
    plan = plan_tick(HOURLY, last_fired=None, started=started, now=started, catch_up=True)
    assert plan == TickPlan(fire=None, next_wakeup=utc(2026, 1, 1, 11))


def test_first_start_fires_the_first_tick_after_started() -> None:
    started = utc(2026, 1, 1, 10, 30)
    now = utc(2026, 1, 1, 11, 0, 0, 2000)
    plan = plan_tick(HOURLY, last_fired=None, started=started, now=now, catch_up=False)
    assert plan == TickPlan(fire=utc(2026, 1, 1, 11), next_wakeup=utc(2026, 1, 1, 12))


def test_first_start_of_a_rate_anchored_at_start_fires_at_once() -> None:
    started = utc(2026, 1, 1, 10, 30, 5)
    rate = parse_schedule("rate(5 minutes)", anchor=started)
    plan = plan_tick(rate, last_fired=None, started=started, now=started, catch_up=False)
    assert plan == TickPlan(fire=started, next_wakeup=started + timedelta(minutes=5))


def test_normal_tick() -> None:
    plan = plan_tick(
        HOURLY,
        last_fired=utc(2026, 1, 1, 10),
        started=utc(2026, 1, 1, 9, 12),
        now=utc(2026, 1, 1, 11, 0, 1),
        catch_up=False,
    )
    assert plan == TickPlan(fire=utc(2026, 1, 1, 11), next_wakeup=utc(2026, 1, 1, 12))


def test_tick_exactly_at_now_fires() -> None:
    now = utc(2026, 1, 1, 11)
    for catch_up in (True, False):
        plan = plan_tick(
            HOURLY, last_fired=utc(2026, 1, 1, 10), started=NEW_YEAR, now=now, catch_up=catch_up
        )
        assert plan == TickPlan(fire=now, next_wakeup=utc(2026, 1, 1, 12))


def test_woken_early_nothing_due() -> None:
    plan = plan_tick(
        HOURLY,
        last_fired=utc(2026, 1, 1, 10),
        started=NEW_YEAR,
        now=utc(2026, 1, 1, 10, 59, 59, 999_000),
        catch_up=True,
    )
    assert plan == TickPlan(fire=None, next_wakeup=utc(2026, 1, 1, 11))


def test_catch_up_after_a_year_down_fires_once_with_the_latest_missed_tick() -> None:
    minutely = Counting(inner=parse_schedule("cron(* * * * ? *)"), expression="counting")
    plan = plan_tick(
        minutely,
        last_fired=utc(2025, 1, 1),
        started=utc(2026, 1, 1, 0, 10, 30),
        now=utc(2026, 1, 1, 0, 10, 30),
        catch_up=True,
    )
    assert plan == TickPlan(fire=utc(2026, 1, 1, 0, 10), next_wakeup=utc(2026, 1, 1, 0, 11))
    assert len(minutely.calls) < 100  # a bisection, not 525,600 steps


def test_catch_up_picks_the_latest_of_sparse_ticks() -> None:
    burst = parse_schedule("cron(* 0 1 1 ? *)")  # every minute of 00:00-00:59 on January 1
    plan = plan_tick(
        burst,
        last_fired=utc(2020, 1, 1, 0, 5),
        started=utc(2026, 6, 1),
        now=utc(2026, 6, 1),
        catch_up=True,
    )
    assert plan == TickPlan(fire=utc(2026, 1, 1, 0, 59), next_wakeup=utc(2027, 1, 1))


def test_without_catch_up_missed_ticks_are_skipped() -> None:
    plan = plan_tick(
        HOURLY,
        last_fired=utc(2025, 6, 1),
        started=utc(2026, 1, 1, 10, 30),
        now=utc(2026, 1, 1, 10, 30),
        catch_up=False,
    )
    assert plan == TickPlan(fire=None, next_wakeup=utc(2026, 1, 1, 11), skipped=utc(2026, 1, 1, 10))


def test_without_catch_up_a_late_wakeup_within_the_grace_still_fires() -> None:
    due = utc(2026, 1, 1, 11)

    def wake(late_by: timedelta, grace: timedelta = DEFAULT_GRACE) -> TickPlan:
        return plan_tick(
            HOURLY,
            last_fired=utc(2026, 1, 1, 10),
            started=NEW_YEAR,
            now=due + late_by,
            catch_up=False,
            grace=grace,
        )

    assert wake(DEFAULT_GRACE).fire == due
    too_late = wake(DEFAULT_GRACE + timedelta(microseconds=1))
    assert (too_late.fire, too_late.skipped) == (None, due)
    assert wake(timedelta(seconds=2), grace=timedelta(seconds=1)).fire is None


def test_clock_gone_back_does_not_refire() -> None:
    plan = plan_tick(
        HOURLY,
        last_fired=utc(2026, 1, 1, 12),
        started=NEW_YEAR,
        now=utc(2026, 1, 1, 11, 30),
        catch_up=True,
    )
    assert plan == TickPlan(fire=None, next_wakeup=utc(2026, 1, 1, 13))


def test_exhausted_schedule_has_no_wakeup() -> None:
    once = parse_schedule("at(2026-01-01T10:00:00)")
    fired = plan_tick(
        once, last_fired=None, started=NEW_YEAR, now=utc(2026, 1, 1, 10), catch_up=False
    )
    assert fired == TickPlan(fire=utc(2026, 1, 1, 10), next_wakeup=None)
    after = plan_tick(
        once,
        last_fired=utc(2026, 1, 1, 10),
        started=NEW_YEAR,
        now=utc(2026, 1, 1, 10, 5),
        catch_up=False,
    )
    assert after == TickPlan(fire=None, next_wakeup=None)


def test_plan_tick_accepts_any_zone_and_answers_in_utc() -> None:
    plan = plan_tick(
        HOURLY,
        last_fired=datetime(2026, 1, 1, 11, tzinfo=BERLIN),
        started=NEW_YEAR,
        now=datetime(2026, 1, 1, 12, 0, 5, tzinfo=BERLIN),
        catch_up=False,
    )
    assert plan == TickPlan(fire=utc(2026, 1, 1, 11), next_wakeup=utc(2026, 1, 1, 12))
    assert plan.fire is not None and plan.fire.tzinfo is UTC


def test_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="grace"):
        plan_tick(
            HOURLY,
            last_fired=None,
            started=NEW_YEAR,
            now=NEW_YEAR,
            catch_up=False,
            grace=timedelta(seconds=-1),
        )
