"""Where a mapping starts: TRIM_HORIZON, LATEST and AT_TIMESTAMP for a new consumer group, and
the group's committed offsets (whatever the starting position says) once it has some."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Service, wait_for
from kafka_broker import committed_offsets, end_offsets, produce
from kafka_pipeline import Pipeline, group, produce_at

from connectors.kafka.embedded import EmbeddedKafka

pytestmark = pytest.mark.integration


def test_each_starting_position_and_committed_offsets_win_over_it(
    kafka_broker: EmbeddedKafka,
    new_topic: Callable[..., str],
    tmp_path: Path,
    service: Callable[..., Service],
) -> None:
    servers = kafka_broker.bootstrap_servers
    topics = {name: new_topic(1) for name in ("horizon", "latest", "at")}
    now_ms = int(time.time() * 1000)
    at_ms = now_ms - 60_000

    # One record per produced batch (Tansu's end offset may lag by one batch: one record).
    acks = {
        name: produce_at(servers, topics[name], [b"old %d" % i for i in range(10)], now_ms)
        for name in ("horizon", "latest")
    }
    acks["at"] = produce_at(
        servers, topics["at"], [b"old %d" % i for i in range(10)], at_ms - 5_000
    )
    acks["at"] += produce_at(
        servers, topics["at"], [b"mid %d" % i for i in range(10)], at_ms + 5_000
    )

    def pipeline_with(latest_position: str) -> Pipeline:
        pipeline = Pipeline(tmp_path, servers)
        for name in topics:
            pipeline.function(name)
        pipeline.kafka("horizon", topics["horizon"], starting_position="TRIM_HORIZON")
        pipeline.kafka("latest", topics["latest"], starting_position=latest_position)
        pipeline.kafka(
            "at",
            topics["at"],
            starting_position="AT_TIMESTAMP",
            starting_position_timestamp=at_ms / 1000,
        )
        pipeline.write()
        return pipeline

    pipeline = pipeline_with("LATEST")
    first = service(pipeline.config)
    first.wait_started()
    # Once LATEST has committed where it starts, records produced now are after it.
    wait_for(
        lambda: committed_offsets(servers, group("latest"), topics["latest"], [0]),
        timeout=30,
        message="the LATEST mapping to commit its start",
    )
    for name in topics:
        acks[name] += produce(servers, topics[name], _values("new", 10))
    _wait_committed(servers, topics, acks)
    assert first.terminate() == 0

    assert _values_of(pipeline, "horizon") == _names("old", 10) + _names("new", 10)
    latest = _values_of(pipeline, "latest")
    assert latest[-10:] == _names("new", 10)
    # Tansu's ListOffsets(latest) may under-report by one produced batch (one record here).
    assert set(latest[:-10]) <= {"old 9"}
    assert _values_of(pipeline, "at") == _names("mid", 10) + _names("new", 10)

    # Restarted with TRIM_HORIZON, the group's committed offset still decides.
    pipeline = pipeline_with("TRIM_HORIZON")
    second = service(pipeline.config)
    second.wait_started()
    for name in topics:
        acks[name] += produce(servers, topics[name], _values("newer", 5))
    _wait_committed(servers, topics, acks)
    assert second.terminate() == 0
    for name in topics:
        by_second = [
            r.value
            for call in pipeline.calls(name)
            if call.pid == second.process.pid  # type: ignore[union-attr]
            for r in call.records
        ]
        assert by_second == _names("newer", 5)


def _values(prefix: str, count: int) -> list[tuple[None, bytes, tuple[()]]]:
    return [(None, f"{prefix} {i}".encode(), ()) for i in range(count)]


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(count)]


def _values_of(pipeline: Pipeline, name: str) -> list[str | None]:
    return [record.value for record in pipeline.delivered(name)]


def _wait_committed(
    servers: str, topics: dict[str, str], acks: dict[str, list[tuple[int, int]]]
) -> None:
    for name, topic in topics.items():
        ends = end_offsets(acks[name])
        wait_for(
            lambda: committed_offsets(servers, group(name), topic, [0]) == ends,  # noqa: B023
            timeout=30,
            message=f"{name}: committed offsets to reach {ends}",
        )
