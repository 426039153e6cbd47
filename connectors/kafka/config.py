"""``type = "kafka"``: Lambda's self-managed Kafka event-source mapping.

The mapping settings (batching, retries, destinations) come from
:class:`~streamfn.streams.contract.StreamSourceConfig`; this Struct adds how to reach the topic.
Names follow AWS's ``CreateEventSourceMapping`` in snake_case, durations in seconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from msgspec import Meta

from streamfn.config import check_path, shown
from streamfn.invoke.destinations import KafkaDestination, parse_destination
from streamfn.streams.contract import StreamSourceConfig

EMBEDDED = "embedded"
"""``bootstrap_servers = "embedded"``: the broker ``streamfn run --embedded-kafka`` starts."""

REBALANCE_TIMEOUT_MS = 300_000
"""Kafka's default: how long the group waits for members to rejoin, at least."""

REBALANCE_MARGIN_S = 30.0
"""Beyond the revoke drain: committing the watermark and sending the rejoin."""

Topic = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


class KafkaConfig(StreamSourceConfig, tag="kafka", frozen=True, kw_only=True):
    bootstrap_servers: Annotated[str, Meta(min_length=1)]
    """``host:port[,host:port...]``, or ``embedded`` with ``streamfn run --embedded-kafka``."""
    topic: Topic
    consumer_group_id: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    """Default ``streamfn-<function>``."""
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    """Where a partition without a committed offset in the group starts."""
    starting_position_timestamp: Annotated[float, Meta(ge=0)] | None = None
    """Unix seconds; only with AT_TIMESTAMP."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    """CA bundle to verify the brokers; default: the system's."""
    ssl_certfile: str | None = None
    """Client certificate (mutual TLS), with ``ssl_keyfile``."""
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = None
    ssl_check_hostname: bool = True

    session_timeout: Annotated[float, Meta(ge=1, le=3_600)] = 10.0
    """Seconds without heartbeats before the group drops this consumer and rebalances."""
    heartbeat_interval: Annotated[float, Meta(gt=0, le=3_600)] = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bootstrap_servers != EMBEDDED:
            check_servers(self.bootstrap_servers)
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            check_path(name, getattr(self, name))
        timestamp = self.starting_position_timestamp
        if self.starting_position == "AT_TIMESTAMP" and timestamp is None:
            raise ValueError("`starting_position_timestamp`: required with AT_TIMESTAMP")
        if self.starting_position != "AT_TIMESTAMP" and timestamp is not None:
            raise ValueError(
                "`starting_position_timestamp`: only allowed with starting_position = "
                f'"AT_TIMESTAMP" (got {self.starting_position!r})'
            )
        if self.on_failure is not None:
            destination = parse_destination(self.on_failure)
            if isinstance(destination, KafkaDestination) and destination.topic == self.topic:
                raise ValueError("`on_failure`: must be a topic other than the source topic")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"`sasl_mechanism`: required with security_protocol = "
                f'"{self.security_protocol}"; one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512'
            )
        if sasl and (self.sasl_username is None or self.sasl_password is None):
            missing = "sasl_username" if self.sasl_username is None else "sasl_password"
            raise ValueError(
                f'`{missing}`: required with security_protocol = "{self.security_protocol}"'
            )
        if not sasl:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f'`{name}`: needs security_protocol = "SASL_PLAINTEXT" or "SASL_SSL"'
                    )
        if "SSL" not in self.security_protocol:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"):
                if getattr(self, name) is not None:
                    raise ValueError(f'`{name}`: needs security_protocol = "SSL" or "SASL_SSL"')
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            missing = "ssl_keyfile" if self.ssl_keyfile is None else "ssl_certfile"
            raise ValueError(f"`{missing}`: ssl_certfile and ssl_keyfile go together")
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError(
                f"`heartbeat_interval`: must be less than session_timeout "
                f"({self.heartbeat_interval:g} >= {self.session_timeout:g})"
            )

    @property
    def group_id(self) -> str:
        return self.consumer_group_id or f"streamfn-{self.function}"

    @property
    def uses_tls(self) -> bool:
        return "SSL" in self.security_protocol

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients, except ``ssl_context`` (built by the source,
        as it reads files)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": f"streamfn-{self.function}",
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    def consumer_options(self, *, revoke_timeout: float) -> dict[str, Any]:
        """:meth:`client_options` plus the consumer group settings. Offsets are committed only
        by the mapping; a partition without one starts at ``starting_position`` (AT_TIMESTAMP
        seeks from the earliest record, see the source). ``revoke_timeout``: seconds the
        mapping may drain inside a revoke (:class:`~streamfn.streams.contract.StreamContext`)."""
        return {
            **self.client_options(),
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if self.starting_position == "LATEST" else "earliest",
            "session_timeout_ms": int(self.session_timeout * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_interval * 1000),
            "fetch_max_wait_ms": 100,
            "rebalance_timeout_ms": rebalance_timeout_ms(revoke_timeout),
        }


_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


def check_servers(servers: str) -> None:
    """Raise ``ValueError("`bootstrap_servers`: ...")`` unless ``servers`` is a comma-separated
    list of ``host:port`` (an IPv6 host in brackets), each port 1-65535."""
    for entry in servers.split(","):
        host, colon, port = entry.strip().rpartition(":")
        if not colon or not _HOST.match(host) or not port.isascii() or not port.isdigit():
            raise ValueError(
                f"`bootstrap_servers`: expected host:port[,host:port...] or {EMBEDDED!r} "
                f"(got {shown(entry.strip())})"
            )
        if not 1 <= int(port) <= 65_535:
            raise ValueError(f"`bootstrap_servers`: port must be 1-65535 (got {shown(entry)})")


def rebalance_timeout_ms(revoke_timeout: float) -> int:
    """How long the group waits for members to rejoin: a member drains its in-flight
    batches (up to ``revoke_timeout`` seconds: the function timeout plus a grace period)
    and commits before it rejoins, so the group must wait longer than that or it hands the
    partitions on while their batches still run. Never below Kafka's default."""
    drain_ms = math.ceil((revoke_timeout + REBALANCE_MARGIN_S) * 1000)
    return max(REBALANCE_TIMEOUT_MS, drain_ms)
