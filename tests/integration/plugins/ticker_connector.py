"""A third-party connector plugin, as an outside distribution would ship one."""

from __future__ import annotations

import anyio

from streamfn.config import SourceConfig
from streamfn.errors import SourceError
from streamfn.events.contract import SourceContext
from streamfn.plugins import Connector


class TickerConfig(SourceConfig, tag="ticker", frozen=True, kw_only=True):
    count: int = 3
    fail_after: bool = False
    crash: bool = False
    """Fail in an unexpected way (a bug in the plugin), inside a task group of its own."""


class TickerSource:
    def __init__(self, config: SourceConfig) -> None:
        assert isinstance(config, TickerConfig)
        self._config = config

    async def run(self, context: SourceContext) -> None:
        checkpoints = await context.get_checkpoints()
        start = int(checkpoints.get("next", b"0"))
        for i in range(start, self._config.count):
            event = {"tick": i, "source": context.name}
            await context.emit(event, f"tick-{i}", checkpoint=("next", str(i + 1).encode()))
        if self._config.fail_after:
            raise SourceError("ticker lost its clock")
        if self._config.crash:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_settings, {})


async def _read_settings(settings: dict[str, str]) -> None:
    settings["interval"]  # a KeyError: the bug


plugin = Connector(name="ticker", config=TickerConfig, create=TickerSource)
