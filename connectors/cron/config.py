"""``type = "cron"``: a schedule standing in for an EventBridge rule."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from streamfn.config import SourceConfig, shown
from streamfn.errors import InvalidScheduleError

from .schedule import parse_schedule


class CronConfig(SourceConfig, tag="cron", frozen=True, kw_only=True):
    schedule: str
    """``rate(5 minutes)``, ``cron(0 12 * * ? *)``, ``at(2026-12-01T00:00:00)`` or crontab."""
    timezone: str = "UTC"
    input: str | dict[str, Any] | None = None
    """JSON (text or a table) sent instead of the Scheduled Event."""
    catch_up: bool = True
    """After downtime fire the latest missed tick once; false skips missed ticks."""

    def __post_init__(self) -> None:
        try:
            if self.timezone != "UTC":
                ZoneInfo(self.timezone)
        except (ValueError, KeyError, OSError):
            raise ValueError(
                f"`timezone`: unknown time zone {shown(self.timezone)} (expected an IANA name)"
            ) from None
        try:
            parse_schedule(self.schedule, self.timezone)
        except InvalidScheduleError as exc:
            raise ValueError(f"`schedule`: {exc}") from None
        if isinstance(self.input, str):
            try:
                msgspec.json.decode(self.input)
            except msgspec.DecodeError as exc:
                raise ValueError(f"`input`: not valid JSON: {exc}") from None

    def payload(self) -> object | None:
        """The configured input, decoded; None for the default Scheduled Event."""
        if isinstance(self.input, str):
            decoded: object = msgspec.json.decode(self.input)
            return decoded
        return self.input
