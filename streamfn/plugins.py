"""Connector plugins, found through the ``streamfn.connectors`` entry-point group.

A connector distribution registers one entry point per connector::

    [project.entry-points."streamfn.connectors"]
    filedrop = "connectors.filedrop:plugin"

The value names a :class:`Connector`. streamfn's own connectors register exactly like this;
nothing in :mod:`streamfn` imports :mod:`connectors`. Besides its config and its source, a
connector may bring:

- ``format`` (stream connectors: required): its wire format, a
  :class:`~streamfn.streams.contract.StreamFormat` built from a decoded config;
- ``embedded`` (any connector): :class:`EmbeddedServices` that ``streamfn run --embedded
  NAME`` starts for the run (Kafka: a broker), pointing the sources that ask for them at
  them.

Discovery reads entry-point metadata only; a plugin's module is imported the first time
its name is needed (the config file names it), so a broken plugin that is not used cannot
break a pipeline. Two distributions registering the same name are refused, and every
load error names the plugin and the entry point.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from streamfn.errors import PluginError

if TYPE_CHECKING:
    from streamfn.config import SourceConfig
    from streamfn.events.contract import EventSource
    from streamfn.streams.contract import StreamFormat, StreamSource

GROUP = "streamfn.connectors"


class SourceFactory(Protocol):
    def __call__(self, config: SourceConfig, /) -> EventSource | StreamSource: ...


class FormatFactory(Protocol):
    def __call__(self, config: SourceConfig, /) -> StreamFormat: ...


class EmbeddedServices(Protocol):
    """Services a connector starts for ``streamfn run --embedded NAME`` (say a broker).

    The CLI calls :meth:`needed` on every run, before anything starts, and :meth:`open`
    only with the flag; both get all the config's sources (of every connector) and must
    leave the sources of other connectors alone. Neither may be called from plugins'
    import time.
    """

    def needed(self, sources: Sequence[SourceConfig]) -> str | None:
        """Why some of ``sources`` cannot run without the services (a phrase naming the
        setting, e.g. ``bootstrap_servers = "embedded"``), or None."""
        ...

    def open(
        self, sources: Sequence[SourceConfig], log: logging.Logger
    ) -> AbstractAsyncContextManager[Sequence[SourceConfig]]:
        """Start the services for the ``async with`` block (and stop them after it, also on
        cancellation); yields ``sources`` with those that asked for the services pointed
        at them. Raises SourceError when they cannot start."""
        ...


@dataclass(frozen=True, slots=True)
class Connector:
    """What a plugin's entry point names.

    ``config`` is the connector's Struct (a :class:`~streamfn.config.SourceConfig` subclass
    tagged with ``name``); ``create`` builds a source from a decoded config. ``kind`` says
    how the engine drives it: ``"event"`` sources go through the durable async path,
    ``"stream"`` sources through an event-source mapping with batches and checkpoints;
    a stream connector also gives its ``format``. ``embedded``: see the module docstring.
    """

    name: str
    config: type[SourceConfig]
    create: SourceFactory
    kind: Literal["event", "stream"] = "event"
    format: FormatFactory | None = None
    embedded: EmbeddedServices | None = None


class Registry(Mapping[str, "type[SourceConfig]"]):
    """Installed connectors by name; maps a name to its config Struct for config decoding,
    loading the plugin lazily on first use."""

    def __init__(self, entry_points: Mapping[str, importlib.metadata.EntryPoint]) -> None:
        self._entry_points = dict(entry_points)
        self._loaded: dict[str, Connector] = {}

    @classmethod
    def discover(cls) -> Registry:
        found: dict[str, importlib.metadata.EntryPoint] = {}
        for entry_point in importlib.metadata.entry_points(group=GROUP):
            other = found.get(entry_point.name)
            if other is not None and other.value != entry_point.value:
                raise PluginError(
                    f"connector {entry_point.name!r} is registered twice: "
                    f"{other.value!r} and {entry_point.value!r}"
                )
            found[entry_point.name] = entry_point
        return cls(found)

    def connector(self, name: str) -> Connector:
        if name in self._loaded:
            return self._loaded[name]
        entry_point = self._entry_points.get(name)
        if entry_point is None:
            installed = ", ".join(sorted(self._entry_points)) or "(none)"
            raise PluginError(f"no connector named {name!r}; installed: {installed}")
        try:
            connector = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"connector {name!r} ({entry_point.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(connector, Connector) or connector.name != name:
            raise PluginError(
                f"connector {name!r} ({entry_point.value}) is not a streamfn.plugins.Connector "
                f"named {name!r}"
            )
        if connector.kind == "stream" and connector.format is None:
            raise PluginError(
                f"connector {name!r} ({entry_point.value}) is a stream connector without a "
                "format"
            )
        self._loaded[name] = connector
        return connector

    def __getitem__(self, name: str) -> type[SourceConfig]:
        if name not in self._entry_points:
            raise KeyError(name)
        return self.connector(name).config

    def __contains__(self, name: object) -> bool:
        return name in self._entry_points

    def __iter__(self) -> Iterator[str]:
        return iter(self._entry_points)

    def __len__(self) -> int:
        return len(self._entry_points)
