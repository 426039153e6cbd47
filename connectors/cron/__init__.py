"""The ``cron`` connector: EventBridge Scheduled Events on rate, cron and at schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamfn.config import SourceConfig
from streamfn.plugins import Connector

from .config import CronConfig

if TYPE_CHECKING:
    from .source import CronSource


def _create(config: SourceConfig) -> CronSource:
    from .source import CronSource

    assert isinstance(config, CronConfig)
    return CronSource(config)


plugin = Connector(name="cron", config=CronConfig, create=_create)
