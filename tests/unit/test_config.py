"""Config errors name the file, the field path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.cron.config import CronConfig
from connectors.filedrop.config import FiledropConfig
from streamfn.config import Config, SourceConfig, load_config
from streamfn.errors import ConfigError

CONNECTORS: dict[str, type[SourceConfig]] = {"filedrop": FiledropConfig, "cron": CronConfig}

GOOD = """
[service]
state_dir = "state"

[functions.orders]
handler = "orders:handler"
timeout = 30
memory_size = 256
environment = { TABLE = "orders" }

[functions.orders.async]
maximum_retry_attempts = 1
on_failure = "dir:failed"

[functions.other]
handler = "pkg.mod:run"
code = "functions"

[[event_sources]]
function = "orders"
type = "filedrop"
path = "inbox"
suffix = ".json"

[[event_sources]]
function = "other"
type = "cron"
schedule = "rate(5 minutes)"
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "streamfn.toml"
    path.write_text(text)
    return load_config(path, CONNECTORS)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_a_good_config_decodes_with_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    orders = config.functions["orders"]
    assert (orders.timeout, orders.memory_size, orders.environment) == (
        30,
        256,
        {"TABLE": "orders"},
    )
    assert orders.async_.maximum_retry_attempts == 1
    assert orders.async_.maximum_event_age == 21_600
    other = config.functions["other"]
    assert (other.timeout, other.memory_size, other.reserved_concurrency) == (3, 128, None)
    assert config.code_dir("other") == tmp_path / "functions"
    assert config.code_dir("orders") == tmp_path
    assert config.state_dir == tmp_path / "state"
    assert config.service.max_concurrency == 64
    filedrop, cron = config.event_sources
    assert isinstance(filedrop, FiledropConfig) and filedrop.suffix == ".json"
    assert isinstance(cron, CronConfig) and cron.schedule == "rate(5 minutes)"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("timeout = 30", "timeout = 1000"),
            "streamfn.toml: functions.orders.timeout: expected `int` <= 900 (got 1000)",
        ),
        (
            ("timeout = 30", "timeout = 0"),
            "streamfn.toml: functions.orders.timeout: expected `int` >= 1 (got 0)",
        ),
        (
            ("timeout = 30", 'timeout = "30"'),
            "streamfn.toml: functions.orders.timeout: expected `int`, got `str` (got '30')",
        ),
        (
            ("memory_size = 256", "memory_size = 64"),
            "functions.orders.memory_size: expected `int` >= 128 (got 64)",
        ),
        (
            ("maximum_retry_attempts = 1", "maximum_retry_attempts = 3"),
            "functions.orders.async.maximum_retry_attempts: expected `int` <= 2 (got 3)",
        ),
        (
            ("maximum_retry_attempts = 1", "maximum_event_age = 30"),
            "functions.orders.async.maximum_event_age: expected `int` >= 60 (got 30)",
        ),
        (
            ("timeout = 30", "timeuot = 30"),
            "functions.orders.timeuot: unknown field; allowed fields: handler, code, runtime, "
            "timeout",
        ),
        (
            ('state_dir = "state"', 'stat_dir = "state"'),
            "streamfn.toml: service.stat_dir: unknown field; allowed fields: state_dir",
        ),
        (
            ('handler = "orders:handler"', 'handler = "orders"'),
            "functions.orders.handler: bad handler 'orders': expected 'module.function'",
        ),
        (
            ('suffix = ".json"', 'suffix = ".json"\nbatch_size = 3'),
            "event_sources[0].batch_size: unknown field; allowed fields: function, name",
        ),
        (('path = "inbox"', ""), "event_sources[0].path: required field is missing"),
        (
            ('type = "filedrop"', 'type = "s3"'),
            "event_sources[0].type: unknown connector 's3'; installed connectors: cron, filedrop",
        ),
        (
            ('function = "orders"\ntype', 'function = "nope"\ntype'),
            "event_sources[0].function: function 'nope' is not defined; defined functions: "
            "orders, other",
        ),
        (
            ('on_failure = "dir:failed"', 'on_failure = "sqs:queue"'),
            "functions.orders.async.on_failure: 'sqs:queue' is not a destination",
        ),
        (
            ('on_failure = "dir:failed"', 'on_failure = "function:ghost"'),
            "functions.orders.async.on_failure: function 'ghost' is not defined",
        ),
        (
            ('schedule = "rate(5 minutes)"', 'schedule = "rate(5 minute)"'),
            "event_sources[1].schedule:",
        ),
        (
            ('suffix = ".json"', 'suffix = ".json"\nfilters = [\'{"a": 1}\']'),
            "event_sources[0].filters[0]:",
        ),
    ],
)
def test_each_kind_of_error_names_the_field_path(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in GOOD
    message = error(tmp_path, GOOD.replace(old, new, 1))
    assert expected in message


def test_toml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    message = error(tmp_path, "[service\nstate_dir = 1")
    assert message.endswith(
        "streamfn.toml: not valid TOML: Expected ']' at the end of a table "
        "declaration (at line 1, column 9)"
    )
    assert "line 1" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml", CONNECTORS)


def test_function_names_are_checked(tmp_path: Path) -> None:
    message = error(tmp_path, GOOD.replace("[functions.other]", '[functions."bad name"]'))
    assert "functions.bad name: a function name is 1-64 letters" in message


def test_a_source_without_type_lists_the_connectors(tmp_path: Path) -> None:
    message = error(tmp_path, GOOD.replace('type = "filedrop"\n', ""))
    assert "event_sources[0]: missing `type`; one of: cron, filedrop" in message


TWO_DROPS = """
[functions.f]
handler = "f:handler"

[[event_sources]]
function = "f"
type = "filedrop"
path = "a"
{first}
[[event_sources]]
function = "f"
type = "cron"
schedule = "rate(1 minute)"

[[event_sources]]
function = "f"
type = "filedrop"
path = "b"
{second}
"""


def test_two_unnamed_sources_of_one_function_and_type_need_names(tmp_path: Path) -> None:
    # Named by position, their checkpoints would move between them when the file is
    # reordered or an entry removed.
    message = error(tmp_path, TWO_DROPS.format(first="", second=""))
    assert message.endswith(
        "streamfn.toml: event_sources[2]: event_sources[0] and event_sources[2] "
        "both map function 'f' with type 'filedrop'; give each a distinct `name` (its checkpoints "
        "are kept under that name, so it must not depend on the order of the entries)"
    )


def test_two_sources_may_not_share_a_name(tmp_path: Path) -> None:
    message = error(tmp_path, TWO_DROPS.format(first='name = "x"', second='name = "x"'))
    assert "event_sources[2].name" in message
    assert "event_sources[0] and event_sources[2] are both named 'x'" in message
    # An explicit name equal to another entry's default is the same clash.
    message = error(tmp_path, TWO_DROPS.format(first="", second='name = "f-filedrop"'))
    assert "both named 'f-filedrop'" in message


def test_named_or_disabled_sources_keep_the_names_they_had(tmp_path: Path) -> None:
    config = load(tmp_path, TWO_DROPS.format(first="", second='name = "b-drop"'))
    assert list(config.enabled_sources()) == ["f-filedrop", "f-cron", "b-drop"]
    # A disabled duplicate runs nothing, so it keeps no checkpoints to confuse.
    config = load(tmp_path, TWO_DROPS.format(first="", second="enabled = false"))
    assert list(config.enabled_sources()) == ["f-filedrop", "f-cron"]
