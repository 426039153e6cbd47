"""A `streamfn run` killed with SIGKILL mid-stream loses nothing: after a restart every record
is delivered, and the only records delivered twice are those after the last commit (batches
in flight, or finished but not yet committed, when it died)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Service, wait_for
from kafka_broker import committed_offsets, end_offsets, produce
from kafka_pipeline import Pipeline, group

from connectors.kafka.embedded import EmbeddedKafka

pytestmark = pytest.mark.integration


def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_broker: EmbeddedKafka,
    new_topic: Callable[..., str],
    tmp_path: Path,
    service: Callable[..., Service],
    function_runtime: str,
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = new_topic(3)
    pipeline = Pipeline(tmp_path, servers, runtime=function_runtime)
    pipeline.function("slow", delay=0.05)
    pipeline.kafka("slow", topic, batch_size=10, maximum_batching_window=0.05)
    pipeline.write()
    acks = produce(servers, topic, [(None, b"%d" % i, ()) for i in range(1_500)])
    ends = end_offsets(acks)

    first = service(pipeline.config)
    first.wait_started()
    wait_for(lambda: len(pipeline.delivered("slow")) >= 500, timeout=60, message="500 records")
    first.kill()
    at_kill = committed_offsets(servers, group("slow"), topic, [0, 1, 2])
    assert sum(at_kill.values()) < 1_500  # it really died mid-stream

    second = service(pipeline.config)
    second.wait_started()
    wait_for(
        lambda: committed_offsets(servers, group("slow"), topic, [0, 1, 2]) == ends,
        timeout=90,
        message=f"committed offsets to reach {ends}",
    )
    assert second.terminate() == 0

    deliveries = collections.Counter((r.partition, r.offset) for r in pipeline.delivered("slow"))
    assert set(deliveries) == set(acks)  # nothing lost
    twice = {where for where, count in deliveries.items() if count > 1}
    assert all(offset >= at_kill.get(partition, 0) for partition, offset in twice)
    pids = {call.pid for call in pipeline.calls("slow")}
    # Both services did work: in the engine itself (inline), or in their worker processes.
    assert len(pids) == 2 if function_runtime == "inline" else len(pids) >= 2


LINGER = """
import time
from recorder import seen, write


def handler(event, context):
    write("linger_start", {"records": seen(event)})
    time.sleep(1.5)
    write("linger", {"records": seen(event)})
"""


def test_sigterm_lets_the_batch_in_flight_finish_and_commits_it(
    kafka_broker: EmbeddedKafka,
    new_topic: Callable[..., str],
    tmp_path: Path,
    service: Callable[..., Service],
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = new_topic(1)
    pipeline = Pipeline(tmp_path, servers)
    pipeline.function("linger", LINGER)
    pipeline.kafka("linger", topic)
    pipeline.write()
    acks = produce(servers, topic, [(None, b"%d" % i, ()) for i in range(5)])
    running = service(pipeline.config)
    running.wait_started()
    wait_for(lambda: pipeline.calls("linger_start"), timeout=30, message="the batch to start")
    assert not pipeline.calls("linger")
    assert running.terminate() == 0
    assert len(pipeline.delivered("linger")) == 5  # it ran to its end
    assert "waiting up to" in running.stderr
    assert committed_offsets(servers, group("linger"), topic, [0]) == end_offsets(acks)
