"""The emit step of an event-source mapping: filters, idempotency keys, checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from streamfn.events.mapping import EventMapping, EventMappingPolicy, EventMappingStatistics
from streamfn.filtering import compile_filters
from streamfn.invoke.destinations import DestinationWriter
from streamfn.invoke.invoker import Invoker, InvokerPolicy
from streamfn.services import Services
from streamfn.state.intake import Intake
from streamfn.state.sqlite import open_sqlite_store
from streamfn.testing import FakeClock, GatedRuntime

pytestmark = pytest.mark.anyio


async def test_emit_filters_derives_keys_and_checkpoints_with_the_event(tmp_path: Path) -> None:
    clock = FakeClock()
    async with open_sqlite_store(tmp_path / "state.db") as store:
        intake = Intake(store, clock)
        services = Services(
            clock=clock,
            store=store,
            invoker=Invoker(InvokerPolicy(), GatedRuntime()),
            intake=intake,
            destinations=DestinationWriter(tmp_path, intake.destination),
            log_for=lambda part: logging.getLogger(f"streamfn.{part}"),
            region="local",
            account="000000000000",
        )
        policy = EventMappingPolicy(
            name="orders-cron", function="orders", root=str(tmp_path), idempotency_key="id"
        )
        mapping = EventMapping(policy, services, matches=compile_filters(['{"kind": ["order"]}']))
        emit = mapping.context().emit
        assert await emit({"kind": "order", "id": 7}, "tick-1", checkpoint=("a", b"1"))
        assert not await emit({"kind": "order", "id": 7}, "tick-2", checkpoint=("a", b"2"))
        assert not await emit({"kind": "noise"}, "tick-3", checkpoint=("a", b"3"))
        assert await emit({"kind": "order"}, "tick-4")  # no id: the source's key
        assert mapping.statistics() == EventMappingStatistics(emitted=2, filtered=1, duplicates=1)
        assert await store.get_checkpoints("orders-cron") == {"a": b"3"}
        events = await store.lease(now=clock.time(), limit=10, lease_for=30)
        assert [(e.function, e.idempotency_key) for e in events] == [
            ("orders", "7"),
            ("orders", "tick-4"),
        ]
        assert msgspec.json.decode(events[0].payload) == {"kind": "order", "id": 7}
        assert intake.received == 2


def test_the_retry_policy_does_not_read_config() -> None:
    """Policies are built at the edge: the pure async modules never import streamfn.config."""
    import ast

    import streamfn.events.lifecycle as lifecycle
    import streamfn.events.retry as retry

    for module in (retry, lifecycle):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "streamfn.config" not in imported and "tenacity" not in imported, module
