"""Two `streamfn run` processes with the same pipeline (each with its own SQLite state
directory) share a topic's partitions while records are being produced, and together
process every record.

On a rebalance the member giving up a partition lets its in-flight batches finish and
commits them before the partition moves, so nothing is lost and, with a function that never
fails, nothing is delivered twice either."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Service, wait_for
from kafka_broker import committed_offsets, end_offsets, produce
from kafka_pipeline import Pipeline, group

from connectors.kafka.embedded import EmbeddedKafka

pytestmark = pytest.mark.integration

PARTITIONS = 4


def test_two_services_share_the_partitions_while_records_are_produced(
    kafka_broker: EmbeddedKafka,
    new_topic: Callable[..., str],
    tmp_path: Path,
    service: Callable[..., Service],
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = new_topic(PARTITIONS)
    pipeline = Pipeline(tmp_path, servers)
    pipeline.function("steady", delay=0.01)
    pipeline.kafka("steady", topic, batch_size=20)
    pipeline.write()
    # The same pipeline; only the SQLite state directory differs (one process holds each).
    twin = tmp_path / "streamfn-twin.toml"
    twin.write_text(
        pipeline.config.read_text().replace("[service]", '[service]\nstate_dir = ".twin"')
    )

    acks: list[tuple[int, int]] = []
    stop = threading.Event()

    def producer() -> None:
        n = 0
        while not stop.is_set():
            acks.extend(produce(servers, topic, [(None, b"%d" % (n + i), ()) for i in range(50)]))
            n += 50
            stop.wait(0.05)

    first = service(pipeline.config)
    first.wait_started()
    thread = threading.Thread(target=producer)
    thread.start()
    try:
        wait_for(lambda: pipeline.delivered("steady"), timeout=30, message="first deliveries")
        second = service(twin)
        second.wait_started()
        wait_for(
            lambda: "released" in first.stderr and _owned(second) > 0,
            timeout=60,
            message="the second service to get partitions",
        )
        wait_for(lambda: len(acks) >= 3_000, timeout=60, message="3000 records produced")
    finally:
        stop.set()
        thread.join()

    ends = end_offsets(acks)
    wait_for(
        lambda: committed_offsets(servers, group("steady"), topic, list(range(PARTITIONS))) == ends,
        timeout=60,
        message=f"committed offsets to reach {ends}",
    )
    assert first.terminate() == 0 and second.terminate() == 0
    deliveries = collections.Counter((r.partition, r.offset) for r in pipeline.delivered("steady"))
    assert set(deliveries) == set(acks)
    assert max(deliveries.values()) == 1  # revoked batches were committed before the move
    by_process = collections.Counter(call.pid for call in pipeline.calls("steady"))
    assert len(by_process) == 2


def _owned(running: Service) -> int:
    """Partitions the service's latest assignment gave it."""
    lines = [line for line in running.stderr.splitlines() if " assigned " in line]
    return 0 if not lines else lines[-1].count(" at offset ")
