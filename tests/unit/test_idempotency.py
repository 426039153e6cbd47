"""The idempotency claim state machine and key derivation (pure, table-driven)."""

from __future__ import annotations

import pytest

from streamfn.events.keys import key_from_path
from streamfn.state.base import Claim, ClaimState
from streamfn.state.claims import IdempotencyRecord, decide_claim

NEW = Claim(ClaimState.NEW)
IN_PROGRESS = Claim(ClaimState.IN_PROGRESS)


def held(until: float | None) -> IdempotencyRecord:
    return IdempotencyRecord(state=ClaimState.IN_PROGRESS, lease_until=until)


def done(expires: float | None, result: bytes = b"r") -> IdempotencyRecord:
    return IdempotencyRecord(state=ClaimState.COMPLETED, expires_at=expires, result=result)


@pytest.mark.parametrize(
    ("record", "now", "expected"),
    [
        pytest.param(None, 100.0, NEW, id="no-record-is-new"),
        pytest.param(held(150.0), 100.0, IN_PROGRESS, id="held-by-a-live-owner"),
        pytest.param(held(100.0), 100.0, NEW, id="lease-ending-now-has-ended"),
        pytest.param(held(50.0), 100.0, NEW, id="owner-crashed-lease-passed"),
        pytest.param(held(None), 1e12, IN_PROGRESS, id="lease-without-end-holds"),
        pytest.param(done(150.0), 100.0, Claim(ClaimState.COMPLETED, b"r"), id="completed"),
        pytest.param(done(150.0, b""), 149.9, Claim(ClaimState.COMPLETED, b""), id="empty-result"),
        pytest.param(done(100.0), 100.0, NEW, id="ttl-ending-now-has-ended"),
        pytest.param(done(50.0), 100.0, NEW, id="completed-expired"),
        pytest.param(done(None), 1e12, Claim(ClaimState.COMPLETED, b"r"), id="never-expires"),
    ],
)
def test_decide_claim(record: IdempotencyRecord | None, now: float, expected: Claim) -> None:
    assert decide_claim(record, now) == expected


def test_a_stored_new_record_is_rejected() -> None:
    with pytest.raises(ValueError, match="never 'new'"):
        decide_claim(IdempotencyRecord(state=ClaimState.NEW), 0.0)


EVENT = {
    "detail": {"orderId": "A-1", "amount": 42, "price": 4.5, "paid": True, "note": None},
    "detail-type": "x",
    "Records": [{"s3": {"object": {"key": "in/a.jpg", "size": 3}}}],
    "ids": ["42", 42],
    "nested": {"b": [1, {"d": 1, "c": 2}], "a": "z"},
    "1": "digit-key",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("detail.orderId", '"A-1"'),
        ("detail.amount", "42"),
        ("detail.price", "4.5"),
        ("detail.paid", "true"),
        ("detail-type", '"x"'),
        ("Records.0.s3.object.key", '"in/a.jpg"'),
        ("Records.0.s3.object.size", "3"),
        ("ids.0", '"42"'),
        ("ids.1", "42"),
        ("1", '"digit-key"'),
        ("nested", '{"a":"z","b":[1,{"c":2,"d":1}]}'),
        ("Records.0.s3", '{"object":{"key":"in/a.jpg","size":3}}'),
        # missing paths
        ("detail.customer", None),
        ("detail.note", None),
        ("Records.1.s3", None),
        ("Records.-1.s3", None),
        ("Records.first", None),
        ("detail.orderId.0", None),
        ("detail.amount.x", None),
        ("nothing", None),
    ],
)
def test_key_from_path(path: str, expected: str | None) -> None:
    assert key_from_path(EVENT, path) == expected


def test_key_from_path_does_not_index_into_strings_or_non_json() -> None:
    assert key_from_path("abc", "0") is None
    assert key_from_path({"a": b"xy"}, "a.0") is None
    assert key_from_path(42, "a") is None


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b"])
def test_key_from_path_rejects_empty_segments(path: str) -> None:
    with pytest.raises(ValueError, match="empty segment"):
        key_from_path(EVENT, path)
