"""One handler call: decode the event, call, encode the result, and name every ending.

Shared by the in-process runtime (:mod:`streamfn.runtime.inline`) and the worker processes
of the isolated runtime (:mod:`streamfn.runtime.process.worker`), so a handler ends the
same way wherever it runs:

- an empty payload is handed to the handler as ``{}``, as AWS does; invalid JSON →
  ``Runtime.UnmarshalError``;
- the result is JSON-encoded as AWS's Python runtime encodes it
  (:mod:`streamfn.runtime.marshaller`; ``bytes`` pass through unchanged); an unencodable
  result (a ``set``, a ``datetime``...) → ``Runtime.MarshalError``, a result over 6 MB →
  ``Function.ResponseSizeTooLarge``;
- an exception → FUNCTION_ERROR with Lambda's error object; ``sys.exit()`` → CRASHED with
  ``Runtime.ExitError``;
- an awaitable result (an ``async def`` handler, or a sync wrapper around one) is left to
  the caller, which awaits it with :func:`settle` on its own event loop.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec

from streamfn.runtime import logs, marshaller
from streamfn.runtime.context import LambdaContext
from streamfn.runtime.handlers import Handler
from streamfn.types import Outcome


class Ended(NamedTuple):
    """How one call ended: the outcome, the response (or error object) bytes, and the error
    object again as a dict when it should be logged as AWS's ``[ERROR]`` lines."""

    outcome: Outcome
    payload: bytes
    error_type: str | None = None
    error: dict[str, Any] | None = None


class Fault(Exception):
    """Raised inside this module to end a call early with a prepared :class:`Ended`."""

    def __init__(self, ended: Ended) -> None:
        self.ended = ended


def is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def call(handler: Handler, payload: bytes, context: LambdaContext) -> Ended | Awaitable[Any]:
    """Decode, call and encode; an awaitable result is left to the caller's event loop."""
    rid = context.aws_request_id
    try:
        value = handler(unmarshal(payload, rid), context)
    except Fault as fault:
        return fault.ended
    except SystemExit as exc:
        return exited(exc, rid)
    except Exception as exc:
        return raised(exc, rid)
    return value if inspect.isawaitable(value) else marshal(value, rid)


def unmarshal(payload: bytes, rid: str) -> Any:
    if not payload.strip():
        return {}  # AWS hands an empty invoke body to the handler as {}
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        message = f"Unable to unmarshal input: {exc}"
        raise Fault(fault("Runtime.UnmarshalError", message, rid)) from None


async def settle(make: Callable[[], Awaitable[Any]], rid: str) -> Ended:
    """Await an async handler's result and encode it."""
    try:
        value = await make()
    except SystemExit as exc:
        return exited(exc, rid)
    except Exception as exc:
        return raised(exc, rid)
    return marshal(value, rid)


def marshal(value: Any, rid: str) -> Ended:
    if isinstance(value, bytes):
        payload = value
    else:
        try:
            payload = marshaller.to_json(value)
        except marshaller.MarshalError as exc:
            return fault("Runtime.MarshalError", f"Unable to marshal response: {exc}", rid)
    too_large = marshaller.too_large(len(payload))
    if too_large is not None:
        return fault("Function.ResponseSizeTooLarge", too_large, rid)
    return Ended(Outcome.SUCCESS, payload)


def fault(error_type: str, message: str, rid: str) -> Ended:
    error = logs.fault_object(message, error_type, request_id=rid)
    return Ended(Outcome.FUNCTION_ERROR, marshaller.to_json(error), error_type, error)


def raised(exc: Exception, rid: str) -> Ended:
    error = logs.error_object(exc, request_id=rid)
    return Ended(Outcome.FUNCTION_ERROR, marshaller.to_json(error), error["errorType"], error)


def exited(exc: SystemExit, rid: str) -> Ended:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    payload = logs.exit_payload(rid, status)
    return Ended(Outcome.CRASHED, payload, "Runtime.ExitError", msgspec.json.decode(payload))
