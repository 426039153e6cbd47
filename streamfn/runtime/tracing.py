"""X-Ray trace ids for invocations: every invocation has one, as on Lambda.

The header a function sees (``_X_AMZN_TRACE_ID`` in the ``python`` runtime, the
``Lambda-Runtime-Trace-Id`` header of the Runtime API's ``/next`` for ``provided``)::

    Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0

``Root`` is ``1-`` + 8 hex digits of the trace's start (epoch seconds) + ``-`` + 24 random
hex digits; ``Parent`` is the 16-hex id of the function's own segment, new for every
invocation; ``Sampled`` is ``1`` or ``0``. Where the caller carries a trace context
(:attr:`streamfn.types.InvocationRequest.trace_context`: an X-Ray header, e.g. an async
invoke's ``X-Amzn-Trace-Id``, or a W3C ``traceparent``, e.g. a Kafka record's header), the
invocation continues that trace: same ``Root`` (a ``traceparent``'s trace id split as
X-Ray writes it) and the caller's sampling decision. Anything else starts a new, unsampled
trace. Pure: the time and the random bytes are passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def trace_header(
    context: str | None, *, now: float, random_bytes: Callable[[int], bytes] = os.urandom
) -> str:
    """The invocation's X-Ray trace header (see the module docstring)."""
    parent = random_bytes(8).hex()
    continued = _continue(context) if context else None
    if continued is None:
        root, sampled = f"1-{int(now) & 0xFFFFFFFF:08x}-{random_bytes(12).hex()}", "0"
    else:
        root, sampled = continued
    return f"Root={root};Parent={parent};Sampled={sampled}"


def root_of(header: str) -> str | None:
    """The ``Root`` of an X-Ray trace header, None if it has none."""
    return _fields(header).get("Root")


def _continue(context: str) -> tuple[str, str] | None:
    """(root, sampled) of a caller's X-Ray header or W3C traceparent; None if neither."""
    context = context.strip()
    parts = context.split("-")
    if len(parts) == 4 and "=" not in context:  # traceparent: 00-<32 hex>-<16 hex>-<flags>
        version, trace, span, flags = parts
        if not (_hex(version, 2) and _hex(trace, 32) and _hex(span, 16) and _hex(flags, 2)):
            return None
        if version == "ff" or set(trace) == {"0"}:
            return None
        return f"1-{trace[:8]}-{trace[8:]}", "1" if int(flags, 16) & 1 else "0"
    fields = _fields(context)
    root = fields.get("Root", "")
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1" or not _hex(pieces[1], 8) or not _hex(pieces[2], 24):
        return None
    return root, "1" if fields.get("Sampled") == "1" else "0"


def _fields(header: str) -> dict[str, str]:
    fields = {}
    for item in header.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value.lower())
