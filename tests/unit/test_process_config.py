"""The execution-environment fields of ``[functions.NAME]``: defaults and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from streamfn.config import Config, parse_config
from streamfn.errors import ConfigError
from streamfn.runtime.process import open_process_runtime


class Clock:
    def time(self) -> float:
        return 0.0

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()


def parse(function: dict[str, Any], **service: Any) -> Config:
    raw = {"service": service, "functions": {"f": {"handler": "app:handler", **function}}}
    return parse_config(raw, connectors={}, path=Path("/srv/streamfn.toml"))


def test_defaults_are_lambdas() -> None:
    function = parse({}).functions["f"]
    assert function.runtime == "python"
    assert function.ephemeral_storage == 512
    assert function.keep_warm == 300
    assert function.provisioned_concurrency == 0
    assert function.inherit_environment == ()
    assert function.bootstrap is None


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ({"runtime": "java"}, "functions.f.runtime: invalid enum value 'java'"),
        ({"ephemeral_storage": 256}, "functions.f.ephemeral_storage: expected `int` >= 512"),
        ({"ephemeral_storage": 20_000}, "functions.f.ephemeral_storage: expected `int` <= 10240"),
        ({"keep_warm": -1}, "functions.f.keep_warm: expected `float` >= 0"),
        ({"inherit_environment": ["A-B"]}, "functions.f.inherit_environment[0]: expected `str`"),
        ({"bootstrap": "run"}, 'functions.f.bootstrap: only used with runtime = "provided"'),
        (
            {"reserved_concurrency": 2, "provisioned_concurrency": 3},
            "functions.f.provisioned_concurrency: must be <= reserved_concurrency (2) (got 3)",
        ),
        (
            {"runtime": "inline", "provisioned_concurrency": 1},
            'functions.f.provisioned_concurrency: not available with runtime = "inline"',
        ),
    ],
)
def test_errors_name_the_field(function: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(function)
    assert error in str(caught.value)


def test_provided_takes_a_bootstrap() -> None:
    function = parse({"runtime": "provided", "bootstrap": "bin/run"}).functions["f"]
    assert function.bootstrap == "bin/run"


@pytest.mark.anyio
async def test_more_provisioned_environments_than_max_concurrency_is_refused() -> None:
    config = parse({"provisioned_concurrency": 5}, max_concurrency=4)
    with pytest.raises(ConfigError) as caught:
        async with open_process_runtime(config, clock=Clock()):
            pass
    assert "functions.f.provisioned_concurrency" in str(caught.value)
    assert "service.max_concurrency (4)" in str(caught.value)
