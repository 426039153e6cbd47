"""Plugin discovery: lazy, duplicate-refusing, and clear about what failed."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from streamfn.config import SourceConfig
from streamfn.errors import PluginError
from streamfn.plugins import GROUP, Connector, Registry


def entry(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=GROUP)


class DemoConfig(SourceConfig, tag="demo", frozen=True, kw_only=True):
    pass


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("demo_plugin")
    module.plugin = Connector(name="demo", config=DemoConfig, create=lambda c: None)  # type: ignore[attr-defined,arg-type,return-value]
    module.wrong = object()  # type: ignore[attr-defined]
    module.misnamed = Connector(name="other", config=DemoConfig, create=lambda c: None)  # type: ignore[attr-defined,arg-type,return-value]
    formatless = Connector(name="demo", config=DemoConfig, create=lambda c: None, kind="stream")  # type: ignore[arg-type,return-value]
    module.formatless = formatless  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "demo_plugin", module)
    return module


def test_the_builtin_connectors_register_through_entry_points() -> None:
    registry = Registry.discover()
    assert {"filedrop", "cron", "kafka"} <= set(registry)


def test_loading_is_lazy_and_cached(plugin_module: types.ModuleType) -> None:
    registry = Registry(
        {
            "demo": entry("demo", "demo_plugin:plugin"),
            "broken": entry("broken", "no_such_module:plugin"),
        }
    )
    assert "broken" in registry  # known by name without being imported
    assert registry["demo"] is DemoConfig
    assert registry.connector("demo") is registry.connector("demo")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "no_such_module:plugin",
            "connector 'demo' (no_such_module:plugin) failed to load: ModuleNotFoundError",
        ),
        (
            "demo_plugin:missing",
            "connector 'demo' (demo_plugin:missing) failed to load: AttributeError",
        ),
        ("demo_plugin:wrong", "is not a streamfn.plugins.Connector named 'demo'"),
        ("demo_plugin:misnamed", "is not a streamfn.plugins.Connector named 'demo'"),
        ("demo_plugin:formatless", "is a stream connector without a format"),
    ],
)
def test_load_errors_name_the_plugin(
    plugin_module: types.ModuleType, value: str, message: str
) -> None:
    registry = Registry({"demo": entry("demo", value)})
    with pytest.raises(PluginError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.connector("demo")


def test_an_unknown_name_lists_what_is_installed() -> None:
    registry = Registry({"demo": entry("demo", "demo_plugin:plugin")})
    with pytest.raises(PluginError, match="no connector named 'x'; installed: demo"):
        registry.connector("x")


def test_the_same_name_from_two_distributions_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    found = [entry("demo", "one:plugin"), entry("demo", "two:plugin")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found)
    with pytest.raises(PluginError, match="connector 'demo' is registered twice"):
        Registry.discover()


def test_the_kafka_connector_brings_its_format_and_embedded_broker_as_hooks() -> None:
    kafka = Registry.discover().connector("kafka")
    assert kafka.kind == "stream"
    assert kafka.format is not None and kafka.embedded is not None
    assert "streamfn" not in type(kafka.embedded).__module__.split(".")[0]
