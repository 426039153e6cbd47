"""Handler strings as AWS's Python runtime resolves them, through the inline runtime.

(The ``python`` runtime resolves them with the same code in its workers: see
``tests/integration/test_runtime_process.py``.)
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from streamfn.errors import HandlerImportError
from streamfn.runtime.handlers import HANDLER_FORMS, parse_handler
from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.testing import FakeClock
from streamfn.types import InvocationRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("lambda_function.lambda_handler", ("lambda_function", "lambda_handler")),
        ("pkg.sub.mod.fn", ("pkg.sub.mod", "fn")),
        ("pkg/sub/mod.fn", ("pkg.sub.mod", "fn")),
        ("pkg.mod:fn", ("pkg.mod", "fn")),
        ("app:handler", ("app", "handler")),
        ("my-function.handler", ("my-function", "handler")),
    ],
)
def test_accepted_forms(value: str, parsed: tuple[str, str]) -> None:
    assert parse_handler(value) == parsed


@pytest.mark.parametrize(
    "value",
    ["", "handler", ".handler", "app.", "app:", ":fn", "a..b.fn", "a/.b.fn", "app.fn-x", "a b.fn"],
)
def test_a_malformed_handler_names_the_accepted_forms(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_handler(value)
    assert str(caught.value) == f"bad handler {value!r}: expected {HANDLER_FORMS}"
    assert "lambda_function.lambda_handler" in str(caught.value)
    assert "^" not in str(caught.value)  # words, not a regular expression


def write(root: Path, name: str, source: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


def policy(root: Path, handler: str) -> RuntimePolicy:
    spec = FunctionSpec(name="fn", handler=handler, code_dir=root, runtime="inline")
    return RuntimePolicy(functions={"fn": spec})


@pytest.mark.parametrize(
    ("handler", "path"),
    [
        ("lambda_function.lambda_handler", "lambda_function.py"),
        ("pkg.sub.mod.fn", "pkg/sub/mod.py"),
        ("pkg/sub/mod.fn", "pkg/sub/mod.py"),
        ("app:lambda_handler", "app.py"),
    ],
)
async def test_each_form_runs_in_the_inline_runtime(
    tmp_path: Path, handler: str, path: str
) -> None:
    for package in Path(path).parents:
        if package != Path("."):
            write(tmp_path, str(package / "__init__.py"), "")
    attr = handler.rpartition(".")[2].rpartition(":")[2]
    write(tmp_path, path, f"def {attr}(event, context):\n    return {{'got': event}}\n")
    async with open_inline_runtime(policy(tmp_path, handler), clock=FakeClock()) as runtime:
        request = InvocationRequest(function="fn", payload=b'{"n": 1}', request_id="r")
        result = await runtime.invoke(request)
    assert result.ok and msgspec.json.decode(result.payload) == {"got": {"n": 1}}


async def test_a_malformed_handler_fails_the_open(tmp_path: Path) -> None:
    with pytest.raises(HandlerImportError) as caught:
        async with open_inline_runtime(policy(tmp_path, "handler"), clock=FakeClock()):
            pytest.fail("opened")  # pragma: no cover
    assert caught.value.error_type == "Runtime.MalformedHandlerName"
    assert HANDLER_FORMS in str(caught.value)


async def test_a_built_in_module_cannot_be_the_handler_module(tmp_path: Path) -> None:
    builtin = sorted(set(sys.builtin_module_names) - {"__main__"})[0]
    with pytest.raises(HandlerImportError) as caught:
        async with open_inline_runtime(policy(tmp_path, f"{builtin}.fn"), clock=FakeClock()):
            pytest.fail("opened")  # pragma: no cover
    assert caught.value.error_type == "Runtime.BuiltInModuleConflict"
    assert f"Cannot use built-in module {builtin} as a handler module" in str(caught.value)
