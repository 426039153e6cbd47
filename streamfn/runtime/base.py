"""The runtime boundary: one call that runs one invocation.

Who calls: the invoker (:mod:`streamfn.invoke.invoker`), after it has taken a concurrency
slot for the function. The runtime never throttles and never retries; it runs the request
in an execution environment and reports what happened.

Contract of :meth:`Runtime.invoke`:

- returns an :class:`~streamfn.types.InvocationResult` for every way a handler can end:
  success, an exception, a timeout at ``timeout`` seconds, a crash of the environment;
- raises only when the engine itself is broken (never for anything the handler does);
- logs Lambda's START / END / REPORT lines for the invocation to the ``streamfn.functions``
  logger;
- on cancellation (engine shutdown past its grace period) abandons the invocation; the
  caller treats it as never finished, so its record is redelivered after restart.

Implementations: :mod:`streamfn.runtime.process` (isolated worker processes, the default),
:mod:`streamfn.runtime.runtime_api` (``provided``: any language through the Runtime API) and
:mod:`streamfn.runtime.inline` (in the engine process); :mod:`streamfn.runtime.router`
picks one per function. Callers do not know which one runs their request.
"""

from __future__ import annotations

from typing import Protocol

from streamfn.types import InvocationRequest, InvocationResult


class Runtime(Protocol):
    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """Run one invocation to its end (see the module docstring)."""
        ...


FUNCTION_LOGGER = "streamfn.functions"
"""Logger that receives START / END / REPORT lines and handler log output, one line each."""


def function_arn(
    function: str,
    *,
    region: str = "local",
    account: str = "000000000000",
    qualifier: str | None = None,
) -> str:
    arn = f"arn:aws:lambda:{region}:{account}:function:{function}"
    return f"{arn}:{qualifier}" if qualifier else arn
