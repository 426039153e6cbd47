"""One runtime for the engine: each function routed by its ``runtime`` setting.

``inline`` functions run in the engine process (:mod:`streamfn.runtime.inline`); ``python``
and ``provided`` functions run in execution-environment processes
(:mod:`streamfn.runtime.process`). :func:`open_runtime` opens only the runtimes some
function needs — no template process when every function is inline — and closes them in
reverse order. It takes a :class:`~streamfn.runtime.policy.RuntimePolicy` (built from the
config by :func:`streamfn.policies.runtime_policy`). The result is a
:class:`~streamfn.runtime.base.Runtime` like any other, so the invoker, mapper and
connectors do not know which one runs a function.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from streamfn.clock import Clock
from streamfn.runtime.base import Runtime
from streamfn.runtime.inline import open_inline_runtime
from streamfn.runtime.policy import RuntimePolicy
from streamfn.runtime.process import open_process_runtime
from streamfn.types import InvocationRequest, InvocationResult


class RoutingRuntime:
    """Sends each invocation to the runtime that runs its function."""

    def __init__(self, routes: dict[str, Runtime]) -> None:
        self.routes: Mapping[str, Runtime] = routes
        """The runtime of each function (for statistics; invoke through :meth:`invoke`)."""

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """See :class:`streamfn.runtime.base.Runtime`. Raises LookupError for a function
        that is not configured (a bug in the caller)."""
        runtime = self.routes.get(request.function)
        if runtime is None:
            raise LookupError(f"function {request.function!r} is not loaded in this runtime")
        return await runtime.invoke(request)


@contextlib.asynccontextmanager
async def open_runtime(
    policy: RuntimePolicy,
    *,
    clock: Clock,
    log: logging.Logger | None = None,
    strict: bool = True,
) -> AsyncIterator[Runtime]:
    """Open the runtimes the policy's functions need. Raises HandlerImportError (a handler
    cannot be imported or a bootstrap fails its init) when ``strict``; otherwise such a
    function is logged once and its invocations fail with that init error (Lambda's error
    object), while the other functions run."""
    isolated = policy.only("python", "provided")
    inline = policy.only("inline")
    routes: dict[str, Runtime] = {}
    async with contextlib.AsyncExitStack() as stack:
        if isolated.functions:
            process = await stack.enter_async_context(
                open_process_runtime(isolated, clock=clock, log=log, strict=strict)
            )
            routes.update(dict.fromkeys(isolated.functions, process))
        if inline.functions:
            runtime = await stack.enter_async_context(
                open_inline_runtime(inline, clock=clock, log=log, strict=strict)
            )
            routes.update(dict.fromkeys(inline.functions, runtime))
        yield RoutingRuntime(routes)
