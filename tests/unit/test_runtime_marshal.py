"""Results marshalled as AWS's Python runtime marshals them, through the inline runtime."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.marshaller import MAX_RESPONSE
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.testing import FakeClock
from streamfn.types import InvocationRequest, InvocationResult, Outcome

pytestmark = pytest.mark.anyio

SOURCE = """
    import datetime, decimal, collections
    Point = collections.namedtuple("Point", "x y")
    RESULTS = {
        "set": {1, 2},
        "datetime": {"at": datetime.datetime(2024, 1, 1)},
        "object": object(),
        "bytes inside": {"b": b"x"},
        "decimal": {"price": decimal.Decimal("1.50"), "nan": decimal.Decimal("NaN")},
        "floats": [float("nan"), float("inf"), 1.5],
        "tuple": (1, "two"),
        "namedtuple": Point(1, 2),
        "text": {"name": "café"},
        "keys": {1: "int key", None: "none key"},
        "big": "x" * (6 * 1024 * 1024 + 100 - 2),
        "too big": "x" * (6 * 1024 * 1024 + 100 - 1),
        "raw too big": b"x" * (6 * 1024 * 1024 + 101),
    }
    def handler(event, context):
        return RESULTS[event]
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def invoke(tmp_path: Path, *events: str) -> list[InvocationResult]:
    (tmp_path / "app.py").write_text(textwrap.dedent(SOURCE), encoding="utf-8")
    spec = FunctionSpec(name="fn", handler="app.handler", code_dir=tmp_path, runtime="inline")
    policy = RuntimePolicy(functions={"fn": spec})
    async with open_inline_runtime(policy, clock=FakeClock()) as runtime:
        return [
            await runtime.invoke(
                InvocationRequest(
                    function="fn", payload=msgspec.json.encode(event), request_id=f"r-{n}"
                )
            )
            for n, event in enumerate(events)
        ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("set", "Object of type set is not JSON serializable"),
        ("datetime", "Object of type datetime is not JSON serializable"),
        ("object", "Object of type object is not JSON serializable"),
    ],
)
async def test_what_the_python_runtime_cannot_encode_is_a_marshal_error(
    tmp_path: Path, event: str, message: str
) -> None:
    [result] = await invoke(tmp_path, event)
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.error_type == "Runtime.MarshalError"
    error = msgspec.json.decode(result.payload)
    assert error == {
        "errorMessage": f"Unable to marshal response: {message}",
        "errorType": "Runtime.MarshalError",
        "requestId": "r-0",
        "stackTrace": [],
    }


async def test_results_have_the_python_runtimes_bytes(tmp_path: Path) -> None:
    events = ["decimal", "floats", "tuple", "namedtuple", "text", "keys", "bytes inside"]
    results = await invoke(tmp_path, *events)
    assert all(result.ok for result in results)
    assert [result.payload for result in results] == [
        b'{"price": 1.50, "nan": NaN}',
        b"[NaN, Infinity, 1.5]",
        b'[1, "two"]',
        b'{"x": 1, "y": 2}',
        b'{"name": "caf\\u00e9"}',  # python3.11 escapes; 3.12 and later would not
        b'{"1": "int key", "null": "none key"}',
        b'{"b": "x"}',  # simplejson decodes bytes as UTF-8 text
    ]


async def test_a_result_over_6_mb_fails_as_on_aws(tmp_path: Path) -> None:
    big, too_big, raw = await invoke(tmp_path, "big", "too big", "raw too big")
    assert big.ok and len(big.payload) == MAX_RESPONSE
    for result, size in ((too_big, MAX_RESPONSE + 1), (raw, MAX_RESPONSE + 1)):
        assert result.outcome is Outcome.FUNCTION_ERROR
        assert result.error_type == "Function.ResponseSizeTooLarge"
        assert msgspec.json.decode(result.payload)["errorMessage"] == (
            f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
            "(6291556 bytes)."
        )
