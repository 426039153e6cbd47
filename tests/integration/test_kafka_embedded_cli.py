"""`streamfn run --embedded-kafka`: the bundled broker for sources with
``bootstrap_servers = "embedded"``, as the quickstart uses it (a cron function produces to a
topic that a Kafka-mapped function consumes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Service, wait_for
from kafka_pipeline import Pipeline

pytestmark = pytest.mark.integration

PRODUCER = """
import os

from aiokafka import AIOKafkaProducer


async def handler(event, context):
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["STREAMFN_EMBEDDED_KAFKA"])
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait("orders", b"order %d" % i)
    finally:
        await producer.stop()
"""


def _pipeline(tmp_path: Path) -> Pipeline:
    pipeline = Pipeline(tmp_path, "embedded")
    pipeline.function("produce", PRODUCER)
    pipeline.sources.append({"function": "produce", "type": "cron", "schedule": "rate(1 second)"})
    pipeline.function("consume")
    pipeline.kafka("consume", "orders", on_failure="kafka://orders-failed")
    pipeline.write()
    return pipeline


def test_the_embedded_broker_serves_the_pipeline(
    tmp_path: Path, service: Callable[..., Service]
) -> None:
    pipeline = _pipeline(tmp_path)
    running = service(pipeline.config, args=("--embedded-kafka",))
    running.wait_started()
    wait_for(
        lambda: len(pipeline.delivered("consume")) >= 6, timeout=60, message="6 orders consumed"
    )
    assert running.terminate() == 0, running.stderr
    assert "embedded Kafka broker at 127.0.0.1:" in running.stderr
    assert "topics: orders, orders-failed" in running.stderr
    assert {r.value for r in pipeline.delivered("consume")} >= {"order 0", "order 1", "order 2"}


def test_embedded_is_valid_config_but_needs_the_flag_to_run(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    cli = [sys.executable, "-m", "streamfn"]
    validated = subprocess.run(
        [*cli, "validate", str(pipeline.config)], capture_output=True, text=True, timeout=30
    )
    assert validated.returncode == 0, validated.stderr
    ran = subprocess.run(
        [*cli, "run", str(pipeline.config)], capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 2
    assert "--embedded-kafka" in ran.stderr


def test_an_unreachable_broker_stops_the_service_with_a_plain_error(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, "127.0.0.1:1")
    pipeline.function("consume")
    pipeline.kafka("consume", "orders")
    pipeline.write()
    ran = subprocess.run(
        [sys.executable, "-m", "streamfn", "run", str(pipeline.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    assert "streamfn: event source consume-kafka failed: kafka: cannot connect" in ran.stderr
    assert "Traceback" not in ran.stderr
