"""Idempotency keys from a path into an event's payload (a mapping's ``idempotency_key``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

__all__ = ["key_from_path"]


def key_from_path(event: object, dotted_path: str) -> str | None:
    """The idempotency key at ``dotted_path`` in a decoded JSON ``event``, or None.

    Segments are separated by dots: a segment names a key of an object, or, for an array,
    a non-negative decimal index (``"Records.0.s3.object.key"``). Keys that contain a dot
    cannot be addressed. A path that does not exist, or that ends at JSON ``null``, gives
    None (no key: a null shared by many events must not make them duplicates).

    The value is encoded as canonical JSON (sorted object keys, no whitespace), so the
    string ``"42"`` gives the key ``'"42"'`` and the number 42 gives ``'42'``: different
    values never share a key. Raises ValueError for an empty path or an empty segment.
    """
    segments = dotted_path.split(".")
    if not all(segments):
        raise ValueError(f"idempotency key path {dotted_path!r} has an empty segment")
    value: object = event
    for segment in segments:
        if isinstance(value, Mapping):
            if segment not in value:
                return None
            value = value[segment]
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
            if not (segment.isascii() and segment.isdigit()):
                return None
            index = int(segment)
            if index >= len(value):
                return None
            value = value[index]
        else:
            return None
    if value is None:
        return None
    return msgspec.json.encode(value, order="sorted").decode()
