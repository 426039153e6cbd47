"""Function settings as a Lambda user writes them: AWS's handler strings, the logging
config, and Lambda's reserved environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamfn.config import Config, parse_config
from streamfn.errors import ConfigError


def config(**function: Any) -> Config:
    raw = {"functions": {"f": {"handler": "lambda_function.lambda_handler", **function}}}
    return parse_config(raw, {}, path=Path("/srv/streamfn.toml"))


@pytest.mark.parametrize(
    "handler",
    ["lambda_function.lambda_handler", "pkg.sub.mod.fn", "pkg/sub/mod.fn", "module:attr"],
)
def test_every_handler_form_aws_and_streamfn_accept_is_valid(handler: str) -> None:
    assert config(handler=handler).functions["f"].handler == handler


@pytest.mark.parametrize("handler", ["lambda_handler", "mod.", ".fn", "a b.c", "mod:"])
def test_an_invalid_handler_names_the_accepted_forms(handler: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(handler=handler)
    message = str(caught.value)
    assert "functions.f" in message and "handler" in message
    assert "lambda_function.lambda_handler" in message and "module:function" in message
    assert "^[" not in message  # the forms, not a regular expression


@pytest.mark.parametrize("handler", ["main", "bootstrap", "function.handler", "anything goes"])
def test_a_provided_handler_is_free_form(handler: str) -> None:
    assert config(handler=handler, runtime="provided").functions["f"].handler == handler


@pytest.mark.parametrize("variable", ["AWS_REGION", "_HANDLER", "AWS_LAMBDA_FUNCTION_NAME"])
def test_a_reserved_variable_in_environment_is_an_error_naming_it(variable: str) -> None:
    with pytest.raises(ConfigError, match=rf"environment.{variable}.*reserved"):
        config(environment={variable: "x"})


def test_log_levels_need_the_json_format_as_on_aws() -> None:
    with pytest.raises(ConfigError, match=r'application_log_level.*log_format = "JSON"'):
        config(application_log_level="DEBUG")
    function = config(
        log_format="JSON", application_log_level="DEBUG", system_log_level="WARN"
    ).functions["f"]
    assert (function.log_format, function.application_log_level) == ("JSON", "DEBUG")


def test_an_unknown_log_format_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"log_format.*Text.*JSON|log_format.*JSON.*Text"):
        config(log_format="XML")
