"""Schedule arithmetic for the cron connector: parse an expression, find its ticks, and decide
which tick to fire now. Pure code: no I/O, no clock reads; the source passes ``now``.

Theory of operation
-------------------
A schedule is a set of instants. Each kind answers one question, :meth:`Schedule.next_after`:
the first instant strictly after ``t``, or None once the set is exhausted. The rest is
derived from it. :meth:`Schedule.latest_between`, the last instant in ``(lo, hi]``,
bisects over ``next_after``, so a year of downtime costs some twenty probes, never a walk
over every missed minute. :func:`plan_tick` is the source's decision at each wakeup.

* ``rate(N unit)``: unit ``minute|hour|day`` when N is 1, ``minutes|hours|days`` otherwise
  (AWS). Ticks fall at ``anchor + k * period``, k >= 0, in real time: as in AWS, a day is
  24 hours whatever the zone. The source must persist the anchor (say, the first start,
  which gives AWS's "starts immediately") and pass it back. The default is the Unix epoch.
* ``cron(min hour day-of-month month day-of-week year)``: AWS's fields. Exactly one day
  field is ``?``. Day-of-week runs 1-7 = SUN-SAT. ``L``, ``LW``, ``nW``, ``nL`` and ``n#k``
  work, and so do names and years 1970-2199.
* A 5-field crontab line: day-of-week 0-7, with 0 and 7 both Sunday. When both day fields
  are restricted, either may match (Vixie cron). cronsim's L, LW, # and nL work too.
* ``at(yyyy-mm-ddThh:mm:ss)``: once, at a local time in the schedule's zone.

Both cron dialects share one engine. The minute and hour fields give the wall-clock times
of a day. cronsim (https://github.com/cuu508/cronsim) picks the matching dates. It is
given "0 0 0 dom month dow" and naive dates, with AWS fields translated first: day-of-week
becomes 0-6, ``?`` becomes ``*``, lists are expanded. cronsim cannot do the year field or
``nW`` (the weekday nearest day n), so those are date filters here. Every AWS field is also
checked here, so errors speak AWS. cronsim's DST stepping is not used: it skips a midnight
in zones with a 30-minute shift (Australia/Lord_Howe), and it follows Debian, not AWS.

Daylight saving time: each wall-clock time maps to the instants at which the clock shows it.

* ``cron(...)`` follows what AWS documents for EventBridge Scheduler: "When the time shifts
  forward in Spring, your schedule invocation gets skipped if the cron expression falls on a
  non-existent date and time. When the time shifts back in the Fall, your schedule runs only
  once" (knowledge center: eventbridge-scheduler-adjust-dst). A daily 02:30 job in Berlin
  skips 2026-03-29 and runs once on 2026-10-25, at the first 02:30. One exception: if the
  hours field covers all 24 hours (hourly, every N minutes), the job fires at both instants
  of a repeated time, so it keeps firing every real hour or minute.
* crontab keeps Debian cron's rule. If neither the minute nor the hour field starts with
  ``*``, the job is "fixed-time": a time in the gap fires at the first instant after it
  (02:30 becomes 03:00 CEST), and a repeated time fires once. Other crontab jobs fire
  whenever the wall clock matches.
* ``at()``: a time in the gap fires at the first instant after it (skipping would mean
  never firing). A repeated time fires at its first occurrence.
"""

from __future__ import annotations

import calendar
import re
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import NoReturn
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from streamfn.errors import InvalidScheduleError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_GRACE = timedelta(seconds=60)
"""How late a tick may be and still fire when ``catch_up`` is off. It matches AWS's 60-second
precision: a tick due at 1:00 may be delivered up to 1:00:59."""

_TINY = timedelta(microseconds=1)
_ZERO, _SECOND, _MINUTE, _DAY = (timedelta(seconds=n) for n in (0, 1, 60, 86400))
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # AWS numbers these 1-7
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_RATE_UNITS = {
    "second": timedelta(seconds=1),  # a streamfn extension for demos and tests; AWS: minutes up
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_AT_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")


@dataclass(frozen=True, kw_only=True)
class Schedule(ABC):
    """A parsed, immutable schedule; build one with :func:`parse_schedule`."""

    expression: str
    timezone: str = "UTC"

    @property
    def tz(self) -> tzinfo:
        return _zone(self.timezone)

    @abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first tick strictly after ``after`` (aware, any zone) as an aware UTC
        datetime, or None when the schedule never fires again. Raises ValueError if
        ``after`` is naive."""

    def latest_between(self, lo: datetime, hi: datetime) -> datetime | None:
        """The last tick ``t`` with ``lo < t <= hi`` (aware UTC), or None if there is none.

        Bisection: ``top`` bounds the search from above, with no tick in ``(top, hi]``. Each
        round either jumps ``t`` past the midpoint of ``(t, top]`` or lowers ``top`` to it,
        so the number of rounds grows with the log of the span, not the number of ticks."""
        hi = _utc(hi)
        t = self.next_after(lo)
        if t is None or t > hi:
            return None
        top = hi
        while True:
            following = self.next_after(t)
            if following is None or following > hi:
                return t
            if following <= t:  # a broken next_after would otherwise spin here forever
                raise RuntimeError(f"{self.expression}: next_after({t}) is not after it")
            mid = following + (top - following) / 2
            probe = self.next_after(mid)
            if probe is not None and probe <= hi:
                t = probe
            else:
                t, top = following, mid


@dataclass(frozen=True, kw_only=True)
class RateSchedule(Schedule):
    """``rate(N unit)``: ticks at ``anchor + k * period`` for k >= 0, in real time. To move
    the anchor, ``dataclasses.replace(schedule, anchor=...)``."""

    period: timedelta
    anchor: datetime = EPOCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor", _utc(self.anchor))

    def next_after(self, after: datetime) -> datetime | None:
        after = _utc(after)
        if after < self.anchor:
            return self.anchor
        return self._tick(((after - self.anchor) // self.period) + 1)

    def latest_between(self, lo: datetime, hi: datetime) -> datetime | None:
        lo, hi = _utc(lo), _utc(hi)
        if hi < self.anchor:
            return None
        t = self._tick((hi - self.anchor) // self.period)
        return t if t is not None and t > lo else None

    def _tick(self, index: int) -> datetime | None:
        try:
            return self.anchor + index * self.period
        except OverflowError:
            return None


@dataclass(frozen=True, kw_only=True)
class AtSchedule(Schedule):
    """``at(...)``: a single tick, already resolved to a UTC instant."""

    when: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.when if self.when > _utc(after) else None


@dataclass(frozen=True, kw_only=True)
class CronSchedule(Schedule):
    """``cron(...)`` or a crontab line: wall-clock times on the dates cronsim matches."""

    day_expression: str  # for cronsim, on naive dates: "0 0 0 DOM MONTH DOW"
    minutes_of_day: tuple[int, ...] = field(repr=False)  # sorted times, minutes since 00:00
    years: tuple[int, ...] | None = field(repr=False)  # sorted; None: any year (crontab)
    nearest_weekday: int | None  # n of AWS "nW"; cronsim then sees day-of-month "*"
    repeated_once: bool  # a time the clock shows twice fires only the first time
    gap_to_end: bool  # a time inside a gap fires when the gap ends (else it is skipped)

    def next_after(self, after: datetime) -> datetime | None:
        after, tz = _utc(after), self.tz
        # From the day before: in an overlap around midnight the local date steps back.
        for day in self._dates(after.astimezone(tz).date() - timedelta(days=1)):
            found = self._first_on(day, after, tz)
            if found is not None:
                return found
        return None

    def _dates(self, day: date) -> Iterator[date]:
        """The matching local dates from ``day`` on, in order."""
        while True:
            if self.years is not None and day.year not in self.years:
                index = bisect_right(self.years, day.year)
                if index == len(self.years):
                    return
                day = date(self.years[index], 1, 1)
            for found in CronSim(self.day_expression, datetime.combine(day, time()) - _SECOND):
                if self.years is not None and found.year not in self.years:
                    day = found.date()
                    break
                n = self.nearest_weekday
                if n is None or found.day == _nearest_weekday(found.year, found.month, n):
                    yield found.date()
            else:
                return  # cronsim gives up after 50 years without a match

    def _first_on(self, day: date, after: datetime, tz: tzinfo) -> datetime | None:
        midnight = datetime.combine(day, time())
        offsets = {_offset(midnight + d, tz, fold) for d in (_ZERO, _DAY) for fold in (0, 1)}
        # Every instant of wall time w lies in [w - high, w - low]; with a single offset
        # (no transition today, and tzdata never has two in a day) it is exactly w - offset.
        low, high = min(offsets), max(offsets)
        elapsed = (after + low).replace(tzinfo=None) - midnight
        best: datetime | None = None
        for minute in self.minutes_of_day[bisect_right(self.minutes_of_day, elapsed // _MINUTE) :]:
            wall = midnight + minute * _MINUTE
            if best is not None and (wall - high).replace(tzinfo=UTC) >= best:
                break
            if low == high:
                return (wall - low).replace(tzinfo=UTC)
            for instant in self._instants(wall, tz):
                if instant > after and (best is None or instant < best):
                    best = instant
        return best

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        """The instants at which the clock shows ``wall`` and this schedule fires."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) != wall:  # inside a spring-forward gap
            return [_gap_end(wall, tz)] if self.gap_to_end else []
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return [first] if second == first or self.repeated_once else [first, second]


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the cron source should do now.

    ``fire`` is the scheduled time to fire now, if any. ``next_wakeup`` is when to call
    :func:`plan_tick` again (None: the schedule is exhausted). ``skipped`` is the latest due
    tick that was not fired because ``catch_up`` is off and it was older than the grace."""

    fire: datetime | None
    next_wakeup: datetime | None
    skipped: datetime | None = None


def plan_tick(
    schedule: Schedule,
    *,
    last_fired: datetime | None,
    started: datetime,
    now: datetime,
    catch_up: bool,
    grace: timedelta = DEFAULT_GRACE,
) -> TickPlan:
    """Decide which tick, if any, the source fires now.

    ``last_fired`` is the scheduled time of the last tick durably queued, or None if nothing
    was ever checkpointed. In that case, ticks before ``started`` are never fired, and a tick
    at exactly ``started`` counts, so a rate anchored at the first start fires at once.
    The ticks due are those in ``(last_fired, now]``. Only the latest of them is a candidate:
    missed ticks fire once, not once each. With ``catch_up`` it fires whatever its age.
    Without it, it fires only if it is at most ``grace`` old. That skips ticks missed during
    downtime but still fires a tick that came due while running, even if the wakeup was
    late. Cost: a few ``next_after`` calls plus one O(log) search."""
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    now = _utc(now)
    floor = _utc(last_fired) if last_fired is not None else _utc(started) - _TINY
    latest = schedule.latest_between(floor, now)
    next_wakeup = schedule.next_after(max(floor, now))
    if latest is None:
        return TickPlan(fire=None, next_wakeup=next_wakeup)
    if catch_up or latest >= now - grace:
        return TickPlan(fire=latest, next_wakeup=next_wakeup)
    return TickPlan(fire=None, next_wakeup=next_wakeup, skipped=latest)


def parse_schedule(expression: str, timezone: str = "UTC", *, anchor: datetime = EPOCH) -> Schedule:
    """Parse ``rate(...)``, ``cron(...)``, ``at(...)`` or a 5-field crontab line.

    ``timezone`` is an IANA name. ``anchor`` is used by ``rate()`` only; see the module
    docstring. Raises :class:`InvalidScheduleError` naming what is wrong."""
    text = expression.strip()
    tz = _zone(timezone, text)
    for prefix in ("rate(", "cron(", "at("):
        if text.startswith(prefix):
            if not text.endswith(")"):
                _fail(text, "missing closing parenthesis")
            inner = text[len(prefix) : -1]
            if prefix == "rate(":
                return RateSchedule(
                    expression=text, timezone=timezone, period=_rate(text, inner), anchor=anchor
                )
            if prefix == "at(":
                return AtSchedule(expression=text, timezone=timezone, when=_at(text, inner, tz))
            return _cron(text, inner, timezone)
    return _crontab(text, timezone)


def _rate(text: str, inner: str) -> timedelta:
    parts = inner.split()
    if len(parts) != 2:
        _fail(text, "expected rate(VALUE UNIT), e.g. rate(5 minutes)")
    value, unit = parts
    if not (value.isascii() and value.isdigit()) or value.startswith("0"):
        _fail(text, f"value must be a positive integer (got {value!r})")
    singular = unit[:-1] if unit.endswith("s") else unit
    if singular not in _RATE_UNITS:
        _fail(text, f"unit must be second(s), minute(s), hour(s) or day(s) (got {unit!r})")
    if value == "1" and unit != singular:
        _fail(text, f"use the singular unit {singular!r} when the value is 1")
    if value != "1" and unit == singular:
        _fail(text, f"use the plural unit '{singular}s' when the value is not 1")
    try:
        return int(value) * _RATE_UNITS[singular]
    except OverflowError:
        _fail(text, "value is too large")


def _at(text: str, inner: str, tz: tzinfo) -> datetime:
    if not _AT_FORMAT.fullmatch(inner):
        _fail(text, "expected at(yyyy-mm-ddThh:mm:ss)")
    try:
        naive = datetime.strptime(inner, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        _fail(text, f"{inner} is not a valid date and time")
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first  # a real local time; in a fall-back overlap, its first occurrence
    return _gap_end(naive, tz)


def _crontab(text: str, timezone: str) -> CronSchedule:
    fields = text.split()
    if len(fields) != 5:
        _fail(text, "expected rate(...), cron(...), at(...) or a 5-field crontab line")
    try:
        CronSim(text, EPOCH)  # cronsim's grammar decides what a crontab line may say
    except CronSimError as exc:
        _fail(text, f"{exc} (crontab fields: minute hour day-of-month month day-of-week)")
    minute, hour, dom, month, dow = fields
    fixed_time = not minute.startswith("*") and not hour.startswith("*")  # Debian's rule
    return CronSchedule(
        expression=text,
        timezone=timezone,
        day_expression=f"0 0 0 {dom} {month} {dow}",
        minutes_of_day=_times(text, minute, hour),
        years=None,
        nearest_weekday=None,
        repeated_once=fixed_time,
        gap_to_end=fixed_time,
    )


def _cron(text: str, inner: str, timezone: str) -> CronSchedule:
    fields = inner.upper().split()
    if len(fields) != 6:
        _fail(
            text,
            "expected 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)}",
        )
    minute, hour, dom, month, dow, year = fields
    if dom != "?" and dow != "?":
        _fail(text, "day-of-month and day-of-week cannot both be specified; use ? in one of them")
    if dom == "?" and dow == "?":
        _fail(text, "day-of-month and day-of-week cannot both be ?; give a value in one of them")
    hour_count = len(_values(text, "hours", hour, 0, 23))
    months = _values(text, "month", month, 1, 12, _MONTHS)
    longest_month = max(_MONTH_DAYS[m - 1] for m in months)
    nearest: int | None = None
    if dom in ("?", "*", "L", "LW"):
        dom_spec = "*" if dom == "?" else dom
    elif dom.endswith("W"):
        nearest, dom_spec = _number(text, "day-of-month", dom[:-1], 1, 31), "*"
        if nearest > longest_month:
            _fail(text, f"day-of-month {nearest} never occurs in the selected months")
    elif "L" in dom or "W" in dom:
        _fail(text, "day-of-month: L, LW and nW must stand alone")
    else:
        days = _values(text, "day-of-month", dom, 1, 31)
        if min(days) > longest_month:
            _fail(text, f"day-of-month {min(days)} never occurs in the selected months")
        dom_spec = _join(days)
    return CronSchedule(
        expression=text,
        timezone=timezone,
        day_expression=f"0 0 0 {dom_spec} {_join(months)} {_day_of_week(text, dow)}",
        minutes_of_day=_times(text, minute, hour),
        years=tuple(sorted(_values(text, "year", year, 1970, 2199))),
        nearest_weekday=nearest,
        repeated_once=hour_count < 24,
        gap_to_end=False,
    )


def _times(text: str, minute: str, hour: str) -> tuple[int, ...]:
    minutes = _values(text, "minutes", minute, 0, 59)
    return tuple(sorted(h * 60 + m for h in _values(text, "hours", hour, 0, 23) for m in minutes))


def _day_of_week(text: str, spec: str) -> str:
    """Translate an AWS day-of-week field (1-7 = SUN-SAT) into cronsim's (0-6)."""
    if spec in ("?", "*"):
        return "*"
    if spec == "L":
        return "6"  # the last day of the week: Saturday
    if ("#" in spec or "L" in spec) and "," in spec:
        _fail(text, "day-of-week: '#' and 'L' expressions must stand alone")
    if "#" in spec:
        day, _, nth = spec.partition("#")
        number = _number(text, "day-of-week", day, 1, 7, _DAYS)
        return f"{number - 1}#{_number(text, 'day-of-week occurrence', nth, 1, 5)}"
    if spec.endswith("L"):
        return f"{_number(text, 'day-of-week', spec[:-1], 1, 7, _DAYS) - 1}L"
    if "/" in spec:
        _fail(text, "day-of-week does not allow '/'")
    return _join(day - 1 for day in _values(text, "day-of-week", spec, 1, 7, _DAYS))


def _values(
    text: str, name: str, spec: str, lo: int, hi: int, names: tuple[str, ...] = ()
) -> set[int]:
    """Expand a field of ``,`` ``-`` ``*`` and ``/`` terms into the set of values it names."""
    values: set[int] = set()
    for term in spec.split(","):
        base, slash, step_text = term.partition("/")
        step = _number(text, f"{name} increment", step_text, 1, hi - lo + 1) if slash else 1
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = (
                _number(text, name, start, lo, hi, names),
                _number(text, name, end, lo, hi, names),
            )
            if first > last:
                _fail(text, f"{name} range {base} runs backwards")
        else:
            first = _number(text, name, base, lo, hi, names)
            last = hi if slash else first
        values.update(range(first, last + 1, step))
    return values


def _number(text: str, name: str, token: str, lo: int, hi: int, names: tuple[str, ...] = ()) -> int:
    if token in names:
        return names.index(token) + lo
    if not (token.isascii() and token.isdigit()):
        what = "a number or a name" if names else "a number"
        _fail(text, f"{name}: {token!r} is not {what}")
    if not lo <= int(token) <= hi:
        _fail(text, f"{name} value {int(token)} is out of range {lo}-{hi}")
    return int(token)


def _join(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def _nearest_weekday(year: int, month: int, day: int) -> int | None:
    """The Monday-to-Friday date nearest to ``day``, never leaving the month (Quartz "nW")."""
    last = calendar.monthrange(year, month)[1]
    if day > last:
        return None  # e.g. 31W in April: no tick that month
    weekday = date(year, month, day).weekday()
    if weekday == 5:  # Saturday: the Friday before, unless that is in the previous month
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday: the Monday after, unless that is in the next month
        return day + 1 if day < last else day - 2
    return day


def _offset(wall: datetime, tz: tzinfo, fold: int) -> timedelta:
    offset = wall.replace(tzinfo=tz, fold=fold).utcoffset()
    assert offset is not None  # tz is UTC or a ZoneInfo
    return offset


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant after the spring-forward gap that swallows the wall time ``wall``.

    In a gap, fold=1 reads ``wall`` with the offset after the transition, which lands before
    it; fold=0 reads it with the offset before, which lands after it. Bisect between them,
    to the second (transitions fall on whole seconds)."""
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    while after - before > _SECOND:
        mid = before + ((after - before) // _SECOND // 2) * _SECOND
        if mid.astimezone(tz).replace(tzinfo=None) > wall:
            after = mid
        else:
            before = mid
    return after


def _zone(name: str, text: str | None = None) -> tzinfo:
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        _fail(text or name, f"unknown time zone {name!r} (expected an IANA name)")


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC. Comparing or subtracting two datetimes that share a tzinfo uses
    their wall clocks and ignores ``fold``, so every instant is normalised first."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _fail(text: str, problem: str) -> NoReturn:
    raise InvalidScheduleError(f"{text}: {problem}")
