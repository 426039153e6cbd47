"""A handler's result as JSON, exactly as AWS's Python runtime encodes it.

Behaves as ``awslambdaric``'s marshaller (the reference): ``simplejson`` (which AWS's
Python runtime ships, so handlers may import it too) with ``use_decimal=False`` and
``allow_nan=True``, a :class:`~decimal.Decimal` written as its digits (``1.50``, NaN as
``NaN``), and ``ensure_ascii=False`` from Python 3.12 on (AWS's runtimes
``python3.12``... do so; ``python3.11`` escapes non-ASCII text). Everything else follows
simplejson: separators ``", "`` and ``": "``, tuples as arrays, named tuples as objects,
``NaN``/``Infinity`` as written, ``bytes`` inside a structure decoded as UTF-8 text;
anything it cannot encode (a ``set``, a ``datetime``, any other object) raises
:class:`MarshalError` with simplejson's message, which the runtime reports as
``Runtime.MarshalError: Unable to marshal response: Object of type set is not JSON
serializable``.

A result over :data:`MAX_RESPONSE` bytes fails as AWS fails it:
``Function.ResponseSizeTooLarge`` (:func:`too_large`).
"""

from __future__ import annotations

import decimal
import math
import sys
from typing import Any

import simplejson  # type: ignore[import-untyped]

MAX_RESPONSE = 6 * 1024 * 1024 + 100
"""Bytes a synchronous response may have (6 MB: AWS's limit, 6,291,556)."""


class MarshalError(Exception):
    """The value cannot be encoded; the message is the encoder's."""


class _Encoder(simplejson.JSONEncoder):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(use_decimal=False, ensure_ascii=sys.version_info < (3, 12), allow_nan=True)

    def default(self, o: Any) -> Any:
        if isinstance(o, decimal.Decimal):
            return math.nan if o.is_nan() else simplejson.RawJSON(str(o))
        return super().default(o)


_ENCODER = _Encoder()


def to_json(value: Any) -> bytes:
    """``value`` as AWS's Python runtime returns it. Raises MarshalError."""
    try:
        text: str = _ENCODER.encode(value)
    except Exception as exc:  # as AWS's runtime: whatever the encoder raises
        raise MarshalError(str(exc)) from None
    return text.encode("utf-8")


def too_large(size: int) -> str | None:
    """AWS's message for a response of ``size`` bytes over the limit; None if within it."""
    if size <= MAX_RESPONSE:
        return None
    return (
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({MAX_RESPONSE} bytes)."
    )
