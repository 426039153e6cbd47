"""The ``filedrop`` connector: S3 ObjectCreated notifications for files dropped in a directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamfn.config import SourceConfig
from streamfn.plugins import Connector

from .config import FiledropConfig

if TYPE_CHECKING:
    from .source import FiledropSource


def _create(config: SourceConfig) -> FiledropSource:
    from .source import FiledropSource

    assert isinstance(config, FiledropConfig)
    return FiledropSource(config)


plugin = Connector(name="filedrop", config=FiledropConfig, create=_create)
