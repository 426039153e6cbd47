"""The execution-environment fields of ``[functions.NAME]``: defaults, errors, and the
runtime policy built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamfn.config import Config, parse_config
from streamfn.errors import ConfigError
from streamfn.policies import runtime_policy
from streamfn.runtime.policy import FunctionSpec


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


def test_more_provisioned_environments_than_max_concurrency_is_refused() -> None:
    config = parse({"provisioned_concurrency": 5}, max_concurrency=4)
    with pytest.raises(ConfigError) as caught:
        runtime_policy(config)
    assert "functions.f.provisioned_concurrency" in str(caught.value)
    assert "service.max_concurrency (4)" in str(caught.value)


def test_the_runtime_policy_carries_resolved_paths_and_the_service_limits() -> None:
    raw = {
        "service": {"max_concurrency": 9, "region": "eu-west-1", "account": "123456789012"},
        "functions": {
            "f": {"handler": "app:handler", "code": "src", "environment": {"A": "1"}},
            "p": {"handler": "x:y", "runtime": "provided", "bootstrap": "bin/run"},
            "i": {"handler": "x:y", "runtime": "inline"},
        },
    }
    policy = runtime_policy(parse_config(raw, connectors={}, path=Path("/srv/streamfn.toml")))
    assert policy.functions["f"] == FunctionSpec(
        name="f", handler="app:handler", code_dir=Path("/srv/src"), environment={"A": "1"}
    )
    assert policy.functions["p"].bootstrap == Path("/srv/bin/run")
    assert policy.functions["f"].bootstrap is None
    assert (policy.max_concurrency, policy.region, policy.account) == (
        9,
        "eu-west-1",
        "123456789012",
    )
    assert sorted(policy.only("python", "provided").functions) == ["f", "p"]
    assert list(policy.only("inline").functions) == ["i"]
    assert policy.arn("f", "live") == "arn:aws:lambda:eu-west-1:123456789012:function:f:live"
