"""The ``context`` object: the attributes AWS's Python runtime gives, and Powertools reads."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from streamfn.runtime.context import ClientContext, CognitoIdentity, LambdaContext, log_stream_name

ARN = "arn:aws:lambda:local:000000000000:function:orders:live"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return 1_580_428_800.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


def make_context(clock: FakeClock, **overrides: Any) -> LambdaContext:
    fields: dict[str, Any] = {
        "aws_request_id": "r-1",
        "function_name": "orders",
        "invoked_function_arn": ARN,
        "memory_limit_in_mb": 256,
        "log_stream_name": "2020/01/31/[$LATEST]" + "a" * 32,
        "deadline": clock.now + 3,
        "clock": clock,
    } | overrides
    return LambdaContext(**fields)


def test_attributes_match_the_aws_python_runtime() -> None:
    context = make_context(FakeClock())
    assert context.aws_request_id == "r-1"
    assert context.function_name == "orders"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == ARN
    assert context.memory_limit_in_mb == "256"  # a string, as AWS reads it from the env
    assert context.log_group_name == "/aws/lambda/orders"
    assert context.log_stream_name == "2020/01/31/[$LATEST]" + "a" * 32
    assert context.client_context is None
    assert isinstance(context.identity, CognitoIdentity)
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None
    assert context.tenant_id is None
    assert "aws_request_id=r-1" in repr(context)


def test_remaining_time_counts_down_to_zero_and_stays_there() -> None:
    clock = FakeClock()
    context = make_context(clock)
    assert context.get_remaining_time_in_millis() == 3000
    clock.now += 1.2505
    assert context.get_remaining_time_in_millis() == 1749
    clock.now += 1.7
    assert context.get_remaining_time_in_millis() == 49
    clock.now += 5
    assert context.get_remaining_time_in_millis() == 0


def test_client_context_fields() -> None:
    client_context = ClientContext(
        {"client": {"installation_id": "i-1", "app_title": "shop"}, "custom": {"k": "v"}}
    )
    context = make_context(FakeClock(), client_context=client_context)
    assert context.client_context is client_context
    assert client_context.client is not None
    assert client_context.client.installation_id == "i-1"
    assert client_context.client.app_title == "shop"
    assert client_context.client.app_version_code is None
    assert client_context.custom == {"k": "v"}
    assert client_context.env is None


def test_log_stream_name_is_dated_per_environment() -> None:
    first = log_stream_name(1_580_428_800.0)
    assert re.fullmatch(r"2020/01/31/\[\$LATEST\][0-9a-f]{32}", first)
    assert log_stream_name(1_580_428_800.0) != first
    assert log_stream_name(1_580_428_800.0, "7").startswith("2020/01/31/[7]")


def test_powertools_logger_reads_the_context() -> None:
    from aws_lambda_powertools import Logger

    stream = io.StringIO()
    logger = Logger(service="shop", stream=stream)

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> str:
        logger.info("hello")
        return "done"

    assert handler({}, make_context(FakeClock())) == "done"
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["message"] == "hello"
    assert record["function_name"] == "orders"
    assert record["function_memory_size"] == "256"
    assert record["function_arn"] == ARN
    assert record["function_request_id"] == "r-1"
