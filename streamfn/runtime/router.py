"""One runtime for the engine: each function routed by its ``runtime`` setting.

``inline`` functions run in the engine process (:mod:`streamfn.runtime.inline`); ``python``
and ``provided`` functions run in execution-environment processes
(:mod:`streamfn.runtime.process`). :func:`open_runtime` opens only the runtimes some
function needs — no template process when every function is inline — and closes them in
reverse order. The result is a :class:`~streamfn.runtime.base.Runtime` like any other, so
the invoker, mapper and connectors do not know which one runs a function.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec

from streamfn.clock import Clock
from streamfn.config import Config
from streamfn.runtime.base import Runtime
from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.process import open_process_runtime
from streamfn.types import InvocationRequest, InvocationResult


class RoutingRuntime:
    """Sends each invocation to the runtime that runs its function."""

    def __init__(self, routes: dict[str, Runtime]) -> None:
        self._routes = routes

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """See :class:`streamfn.runtime.base.Runtime`. Raises LookupError for a function
        that is not configured (a bug in the caller)."""
        runtime = self._routes.get(request.function)
        if runtime is None:
            raise LookupError(f"function {request.function!r} is not loaded in this runtime")
        return await runtime.invoke(request)


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config, *, clock: Clock, log: logging.Logger | None = None
) -> AsyncIterator[Runtime]:
    """Open the runtimes the configured functions need. Raises HandlerImportError (a
    handler cannot be imported or a bootstrap fails its init) and ConfigError."""
    inline = {n: f for n, f in config.functions.items() if f.runtime == "inline"}
    isolated = {n: f for n, f in config.functions.items() if f.runtime != "inline"}
    routes: dict[str, Runtime] = {}
    async with contextlib.AsyncExitStack() as stack:
        if isolated:
            subset = msgspec.structs.replace(config, functions=isolated)
            process = await stack.enter_async_context(
                open_process_runtime(subset, clock=clock, log=log)
            )
            routes.update(dict.fromkeys(isolated, process))
        if inline:
            subset = msgspec.structs.replace(config, functions=inline)
            runtime = await stack.enter_async_context(
                open_inline_runtime(subset, clock=clock, log=log)
            )
            routes.update(dict.fromkeys(inline, runtime))
        yield RoutingRuntime(routes)
