"""X-Ray trace ids of invocations: new ones, and ones that continue the caller's trace."""

from __future__ import annotations

import itertools

import pytest

from streamfn.runtime.tracing import root_of, trace_header

NOW = 1_465_510_280.0  # 0x5759e988


def counting(n: int) -> bytes:
    """Deterministic 'random' bytes: 0x01, 0x02, ..."""
    return bytes(next(_counter) % 256 for _ in range(n))


_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _reset() -> None:
    global _counter
    _counter = itertools.count(1)


def test_a_new_trace_starts_at_now_unsampled() -> None:
    header = trace_header(None, now=NOW, random_bytes=counting)
    assert header == ("Root=1-5759e988-090a0b0c0d0e0f1011121314;Parent=0102030405060708;Sampled=0")


def test_an_x_ray_header_is_continued_with_a_new_parent() -> None:
    caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    header = trace_header(caller, now=NOW + 99, random_bytes=counting)
    assert header == ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0102030405060708;Sampled=1")
    assert root_of(header) == "1-5759e988-bd862e3fe1be46a994272793"


def test_a_w3c_traceparent_is_continued_in_x_ray_form() -> None:
    caller = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    header = trace_header(caller, now=NOW, random_bytes=counting)
    assert header.startswith("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=")
    assert header.endswith(";Sampled=1")
    unsampled = trace_header(caller[:-2] + "00", now=NOW, random_bytes=counting)
    assert unsampled.endswith(";Sampled=0")


@pytest.mark.parametrize(
    "caller",
    [
        "garbage",
        "Root=1-5759e988;Sampled=1",
        "Root=2-5759e988-bd862e3fe1be46a994272793",
        "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
        "00-5759e988bd862e3fe1be46a99427279-53995c3f42cd8ad8-01",
    ],
)
def test_anything_else_starts_a_new_trace(caller: str) -> None:
    header = trace_header(caller, now=NOW, random_bytes=counting)
    assert header.startswith("Root=1-5759e988-090a0b0c0d0e0f1011121314;")
    assert header.endswith(";Sampled=0")


def test_missing_sampled_is_unsampled() -> None:
    caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"
    assert trace_header(caller, now=NOW).endswith(";Sampled=0")
