"""Config edge cases found by fuzzing: each is one ConfigError naming the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.cron.config import CronConfig
from connectors.filedrop.config import FiledropConfig
from connectors.kafka.config import KafkaConfig
from streamfn.config import Config, SourceConfig, load_config
from streamfn.errors import ConfigError

CONNECTORS: dict[str, type[SourceConfig]] = {
    "filedrop": FiledropConfig,
    "cron": CronConfig,
    "kafka": KafkaConfig,
}

FUNCTION = '[functions.f]\nhandler = "m:h"\n'


def load(tmp_path: Path, text: str | bytes) -> Config:
    path = tmp_path / "streamfn.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_config(path, CONNECTORS)


def error(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def service(state_dir: str) -> str:
    return f"[service]\nstate_dir = {state_dir}\n{FUNCTION}"


def source(**fields: str) -> str:
    lines = "".join(f'{key} = "{value}"\n' for key, value in fields.items())
    return f'{FUNCTION}[[event_sources]]\nfunction = "f"\n{lines}'


def test_deeply_nested_toml_is_named_not_a_recursion_error(tmp_path: Path) -> None:
    text = FUNCTION + "deep = " + "[" * 5_000 + "]" * 5_000 + "\n"
    assert error(tmp_path, text).endswith(
        "streamfn.toml: not valid TOML: line 3 (deep): nested too deeply"
    )


def test_state_dir_naming_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    message = error(tmp_path, service('"taken"'))
    assert "service.state_dir: " in message and "exists and is not a directory" in message


def test_state_dir_below_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    message = error(tmp_path, service('"taken/state"'))
    assert "service.state_dir: cannot create" in message and "is not a directory" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_state_dir_in_an_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = error(tmp_path, service('"locked/state"'))
    finally:
        locked.chmod(0o700)
    assert "service.state_dir: cannot create" in message and "is not writable" in message


def test_validating_state_dir_creates_nothing(tmp_path: Path) -> None:
    config = load(tmp_path, service('"a/b/state"'))
    assert config.state_dir == tmp_path / "a/b/state"
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("state_dir", "says"),
    [
        ('"mysql://db/streamfn"', "service.state_dir: unknown scheme 'mysql'"),
        ('""', "service.state_dir: must not be empty"),
        ('"  "', "service.state_dir: must not be empty"),
        ('"a\\u0000b"', "service.state_dir: a path may not contain a NUL byte"),
    ],
)
def test_bad_state_dir_values(tmp_path: Path, state_dir: str, says: str) -> None:
    assert says in error(tmp_path, service(state_dir))


def test_a_postgres_state_dir_is_still_a_url(tmp_path: Path) -> None:
    config = load(tmp_path, service('"postgresql://localhost/test"'))
    assert config.state_url == "postgresql://localhost/test"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (FUNCTION + 'code = "a\\u0000b"\n', "functions.f.code: a path may not contain a NUL byte"),
        (
            '[functions.f]\nhandler = "m"\nruntime = "provided"\nbootstrap = "x\\u0000"\n',
            "functions.f.bootstrap: a path may not contain a NUL byte",
        ),
        (
            source(type="filedrop", path="in\\u0000box"),
            "event_sources[0].path: a path may not contain a NUL byte",
        ),
        (
            FUNCTION + 'environment = { A = "x\\u0000" }\n',
            "functions.f.environment: the value of A contains a NUL byte",
        ),
    ],
)
def test_a_nul_byte_in_a_path_is_named(tmp_path: Path, text: str, says: str) -> None:
    assert says in error(tmp_path, text)


@pytest.mark.parametrize("name", ["1BAD", "A-B", "A B", ""])
def test_an_invalid_environment_variable_name_is_named(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, FUNCTION + f'environment = {{ "{name}" = "x" }}\n')
    assert f"functions.f.environment: invalid variable name {name!r}" in message


@pytest.mark.parametrize(
    "servers", ["localhost", "host:", ":9092", "host:port", "host:0", "host:70000", "a:1,,b:2"]
)
def test_bootstrap_servers_must_be_host_port(tmp_path: Path, servers: str) -> None:
    message = error(tmp_path, source(type="kafka", topic="t", bootstrap_servers=servers))
    assert "event_sources[0].bootstrap_servers: " in message


@pytest.mark.parametrize("servers", ["embedded", "b:9092", "a:1, b-2.example:65535", "[::1]:9092"])
def test_valid_bootstrap_servers_decode(tmp_path: Path, servers: str) -> None:
    config = load(tmp_path, source(type="kafka", topic="t", bootstrap_servers=servers))
    kafka = config.event_sources[0]
    assert isinstance(kafka, KafkaConfig) and kafka.bootstrap_servers == servers


def test_a_time_zone_error_names_timezone(tmp_path: Path) -> None:
    text = source(type="cron", schedule="rate(5 minutes)", timezone="Mars/Olympus")
    message = error(tmp_path, text)
    assert "event_sources[0].timezone: unknown time zone 'Mars/Olympus'" in message


def test_an_error_inside_a_table_prints_a_readable_path(tmp_path: Path) -> None:
    message = error(tmp_path, FUNCTION + 'environment = { "]" = 1 }\n')
    assert 'functions.f.environment."]": expected `str`, got `int`' in message


def test_an_error_inside_a_table_names_a_bare_key(tmp_path: Path) -> None:
    message = error(tmp_path, FUNCTION + "environment = { A = 'x', B = 2 }\n")
    assert "functions.f.environment.B: expected `str`, got `int` (got 2)" in message


def test_an_echoed_value_is_cut(tmp_path: Path) -> None:
    message = error(tmp_path, FUNCTION + f'timeout = "{"x" * 10_000}"\n')
    assert "functions.f.timeout: expected `int`, got `str` (got 'xxx" in message
    assert message.endswith("...)") and len(message) < 200


def test_a_long_unknown_field_and_connector_are_cut(tmp_path: Path) -> None:
    unknown = error(tmp_path, FUNCTION + f"{'k' * 5_000} = 1\n")
    assert f"functions.f.{'k' * 60}: unknown field; allowed fields: handler" in unknown
    assert "k" * 61 not in unknown
    connector = error(tmp_path, source(type="x" * 5_000))
    assert "x" * 61 not in connector and "unknown connector 'xxx" in connector


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, b"\xef\xbb\xbf" + FUNCTION.encode())
    assert config.functions["f"].handler == "m:h"
