"""Idempotency keys and the claim state machine, as pure functions.

Theory of operation
-------------------

An idempotency record lives under (function, key) in the state store. The store reads the
record, asks :func:`decide_claim` what a claim at ``now`` means, and, when the answer is
NEW, writes an IN_PROGRESS record leased to the caller — all inside one transaction. This
module never touches the store; it only decides.

A stored record is IN_PROGRESS (``lease_until`` set) or COMPLETED (``expires_at`` and
``result`` set); NEW is never stored, it is the answer "no live record, the key is yours"::

    (no record) ──claim──► NEW ──store writes──► IN_PROGRESS(lease_until)
    IN_PROGRESS, now <  lease_until ──claim──► IN_PROGRESS    someone else is running it
    IN_PROGRESS, now >= lease_until ──claim──► NEW            the owner crashed or hung
    IN_PROGRESS ──finish──► COMPLETED(result, expires_at)
    IN_PROGRESS ──release──► (no record)                      the invocation failed
    COMPLETED,   now <  expires_at  ──claim──► COMPLETED      with the stored result
    COMPLETED,   now >= expires_at  ──claim──► NEW            the TTL has passed
    COMPLETED / stale IN_PROGRESS ──expire──► (no record)     housekeeping only

Boundaries are half-open: a lease or TTL that ends exactly at ``now`` has ended, the same
rule the async queue applies to leases. A missing ``lease_until`` or ``expires_at`` means
"never ends".

Keys come from the event source (:func:`derive_key` over parts such as topic, partition
and offset) or from a path into the decoded payload (:func:`key_from_path`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from streamfn.state.base import Claim, ClaimState

__all__ = ["IdempotencyRecord", "decide_claim", "derive_key", "key_from_path"]


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored idempotency record, as the store read it."""

    state: ClaimState
    """IN_PROGRESS or COMPLETED; a stored record is never NEW."""
    lease_until: float | None = None
    """For IN_PROGRESS: when the owner's claim lapses."""
    expires_at: float | None = None
    """For COMPLETED: when the completion stops counting."""
    result: bytes | None = None
    """For COMPLETED: the response payload of the completed invocation."""


_NEW = Claim(ClaimState.NEW)
_IN_PROGRESS = Claim(ClaimState.IN_PROGRESS)


def decide_claim(record: IdempotencyRecord | None, now: float) -> Claim:
    """What a claim at ``now`` means, given the stored ``record`` (None: no record).

    On NEW the caller stores an IN_PROGRESS record with its own lease, replacing ``record``.
    Raises ValueError for a stored NEW record, which the store never writes.
    """
    if record is None:
        return _NEW
    if record.state is ClaimState.IN_PROGRESS:
        if record.lease_until is not None and now >= record.lease_until:
            return _NEW
        return _IN_PROGRESS
    if record.state is ClaimState.COMPLETED:
        if record.expires_at is not None and now >= record.expires_at:
            return _NEW
        return Claim(ClaimState.COMPLETED, record.result)
    raise ValueError(f"a stored idempotency record is never {record.state.value!r}")


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


_SEPARATOR = "|"
_ESCAPE = "\\"


def derive_key(parts: Sequence[str]) -> str:
    """Join key parts into one key, unambiguously and readably.

    Each part has ``\\`` and ``|`` escaped with a backslash, and the parts are joined with
    ``|``: ``["a|b", "c"]`` gives ``a\\|b|c`` while ``["a", "b|c"]`` gives ``a|b\\|c``.
    Distinct part lists always give distinct keys. Raises ValueError for no parts, which
    would be indistinguishable from one empty part.
    """
    if isinstance(parts, str) or not parts:
        raise ValueError("an idempotency key needs at least one part (a sequence of str)")
    return _SEPARATOR.join(
        part.replace(_ESCAPE, _ESCAPE + _ESCAPE).replace(_SEPARATOR, _ESCAPE + _SEPARATOR)
        for part in parts
    )
