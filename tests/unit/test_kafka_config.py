"""``type = "kafka"`` sources: AWS's names, ranges and defaults; errors name the field path."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from connectors.kafka.config import KafkaConfig
from connectors.kafka.services import EmbeddedBroker, topics_of
from streamfn.clock import SystemClock
from streamfn.config import Config, SourceConfig, parse_config
from streamfn.errors import ConfigError, SourceError
from streamfn.invoke.destinations import DirDestination
from streamfn.streams.contract import StreamContext
from streamfn.streams.driver import StreamMappingPolicy

CONNECTORS: dict[str, type[SourceConfig]] = {"kafka": KafkaConfig}
MINIMAL = {"function": "orders", "type": "kafka", "bootstrap_servers": "b:9092", "topic": "t"}


def parse(*, timeout: int = 3, **fields: Any) -> Config:
    raw = {
        "functions": {"orders": {"handler": "orders:handler", "timeout": timeout}},
        "event_sources": [{**MINIMAL, **fields}],
    }
    return parse_config(raw, CONNECTORS, path=Path("/srv/streamfn.toml"))


def source(**fields: Any) -> KafkaConfig:
    config = parse(**fields).event_sources[0]
    assert isinstance(config, KafkaConfig)
    return config


def error(**fields: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(**fields)
    return str(caught.value)


def test_defaults_are_awss() -> None:
    config = source()
    assert config.group_id == "streamfn-orders"
    assert config.starting_position == "TRIM_HORIZON"
    assert (config.batch_size, config.maximum_batching_window) == (100, 0.5)
    assert (config.parallelization_factor, config.bisect_batch_on_function_error) == (1, False)
    assert (config.maximum_retry_attempts, config.maximum_record_age) == (-1, -1)
    assert config.function_response_types == ()
    assert not config.report_batch_item_failures
    assert config.on_failure is None and config.enabled


def test_every_documented_field_decodes() -> None:
    config = source(
        consumer_group_id="billing",
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=1_700_000_000,
        batch_size=10_000,
        maximum_batching_window=300,
        parallelization_factor=10,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=10_000,
        maximum_record_age=604_800,
        function_response_types=["ReportBatchItemFailures"],
        on_failure="kafka://t-dlq",
        enabled=False,
        filters=['{"value": {"status": ["paid"]}}'],
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile="/etc/ca.pem",
        session_timeout=6,
        heartbeat_interval=1,
    )
    assert config.group_id == "billing"
    assert config.report_batch_item_failures
    options = config.consumer_options(revoke_timeout=8)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["enable_auto_commit"] is False
    assert (options["session_timeout_ms"], options["heartbeat_interval_ms"]) == (6000, 1000)
    assert options["group_id"] == "billing"


@pytest.mark.parametrize(
    ("fields", "path", "says"),
    [
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"batch_size": 10_001}, "batch_size", "<= 10000"),
        ({"maximum_batching_window": 301}, "maximum_batching_window", "<= 300"),
        ({"parallelization_factor": 11}, "parallelization_factor", "<= 10"),
        ({"maximum_retry_attempts": -2}, "maximum_retry_attempts", ">= -1"),
        ({"maximum_retry_attempts": 10_001}, "maximum_retry_attempts", "<= 10000"),
        ({"maximum_record_age": 59}, "maximum_record_age", "-1 or 60..604800"),
        ({"maximum_record_age": 604_801}, "maximum_record_age", "<= 604800"),
        ({"function_response_types": ["Partial"]}, "function_response_types[0]", "enum"),
        (
            {"function_response_types": ["ReportBatchItemFailures"] * 2},
            "function_response_types",
            "length",
        ),
        ({"starting_position": "EARLIEST"}, "starting_position", "enum"),
        ({"starting_position": "AT_TIMESTAMP"}, "starting_position_timestamp", "required"),
        ({"starting_position_timestamp": 5}, "starting_position_timestamp", "AT_TIMESTAMP"),
        ({"on_failure": "sqs://q"}, "on_failure", "dir:PATH"),
        ({"on_failure": "kafka://t"}, "on_failure", "other than the source topic"),
        ({"topic": "a topic"}, "topic", "matching regex"),
        ({"bootstrap_servers": ""}, "bootstrap_servers", "length"),
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism", "required"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "sasl_username",
            "required",
        ),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism", "SASL_PLAINTEXT"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism", "enum"),
        ({"ssl_cafile": "ca.pem"}, "ssl_cafile", '"SSL"'),
        (
            {"security_protocol": "SSL", "ssl_certfile": "c.pem"},
            "ssl_keyfile",
            "go together",
        ),
        ({"heartbeat_interval": 10, "session_timeout": 10}, "heartbeat_interval", "less than"),
        ({"idempotency_key": "value.id"}, "idempotency_key", "not available"),
        ({"batchsize": 5}, "batchsize", "unknown field"),
    ],
)
def test_errors_name_the_field_path(fields: dict[str, Any], path: str, says: str) -> None:
    message = error(**fields)
    assert f"event_sources[0].{path}:" in message
    assert says in message


def test_embedded_is_a_valid_bootstrap_server_and_the_connector_says_it_needs_its_broker() -> None:
    config = source(bootstrap_servers="embedded", on_failure="kafka://t-dlq")
    assert topics_of(config) == ("t", "t-dlq")
    assert EmbeddedBroker().needed([config]) == 'bootstrap_servers = "embedded"'
    other = source()
    assert topics_of(other) == ()
    assert EmbeddedBroker().needed([other]) is None


def test_the_rebalance_timeout_outlasts_a_revoke_drain_of_the_longest_function() -> None:
    """Review C7: a revoke drains for up to the function timeout + 5 s, and the group must
    not hand the partitions on before that (it was fixed at 300 s; timeouts go to 900)."""
    config = parse(timeout=600)
    kafka = config.event_sources[0]
    assert isinstance(kafka, KafkaConfig)
    policy = StreamMappingPolicy.from_config(
        kafka, function_timeout=config.functions["orders"].timeout, drain_timeout=30
    )
    options = kafka.consumer_options(revoke_timeout=policy.revoke_timeout)
    assert options["rebalance_timeout_ms"] >= (600 + 5) * 1000 + 10_000  # + commit, rejoin
    short = kafka.consumer_options(revoke_timeout=8)
    assert short["rebalance_timeout_ms"] == 300_000  # never below Kafka's default


def test_the_mapping_policy_follows_the_config() -> None:
    config = source(
        batch_size=500,
        maximum_batching_window=2,
        parallelization_factor=4,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=3,
        maximum_record_age=60,
        function_response_types=["ReportBatchItemFailures"],
        on_failure="dir:failed",
    )
    policy = StreamMappingPolicy.from_config(config, function_timeout=30, drain_timeout=10)
    assert (policy.batch.batch_size, policy.batch.window_s) == (500, 2)
    assert policy.batch.parallelization_factor == 4
    assert policy.retry.bisect_on_error and policy.retry.report_batch_item_failures
    assert (policy.retry.maximum_retry_attempts, policy.retry.maximum_record_age_s) == (3, 60)
    assert policy.on_failure == DirDestination("failed")
    assert (policy.function_timeout, policy.drain_timeout) == (30, 10)
    assert policy.max_pending >= 3 * 500 * 4  # room for every lane's batch and the next


def test_infinite_retries_with_a_destination_are_capped_at_ten_as_on_aws() -> None:
    config = source(on_failure="dir:failed")
    policy = StreamMappingPolicy.from_config(config, function_timeout=3, drain_timeout=3)
    assert policy.retry.retry_limit == 10
    assert msgspec.structs.replace(config, on_failure=None).on_failure is None


def test_tls_settings_become_an_ssl_context_and_missing_files_are_clear_errors() -> None:
    from connectors.kafka.source import _ssl_context

    config = source(security_protocol="SSL", ssl_check_hostname=False)
    assert _ssl_context(config).check_hostname is False
    missing = source(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(SourceError, match="TLS settings"):
        _ssl_context(missing)


@pytest.mark.anyio
async def test_embedded_without_the_broker_fails_at_open_and_names_the_flag() -> None:
    from connectors.kafka.source import KafkaSource

    with pytest.raises(SourceError, match="--embedded-kafka"):
        await KafkaSource(source(bootstrap_servers="embedded")).open(_NoListener(), _CONTEXT)


_CONTEXT = StreamContext(
    name="orders-kafka", clock=SystemClock(), log=logging.getLogger("test"), revoke_timeout=8
)


class _NoListener:
    async def assigned(self, partitions: object) -> None:
        raise AssertionError("not reached")

    async def revoked(self, partitions: object) -> None:
        raise AssertionError("not reached")


def test_enum_errors_list_the_allowed_values() -> None:
    message = error(starting_position="EARLIEST")
    assert "event_sources[0].starting_position: invalid enum value 'EARLIEST'" in message
    assert "allowed: TRIM_HORIZON, LATEST, AT_TIMESTAMP" in message
    message = error(function_response_types=["ReportItemFailures"])
    assert "allowed: ReportBatchItemFailures" in message


def test_a_function_failure_destination_must_be_defined() -> None:
    message = error(on_failure="function:ghost")
    assert "event_sources[0].on_failure: function 'ghost' is not defined" in message
