"""Properties of filter patterns built from an event's own values.

A pattern assembled from matchers that each accept the value the event really holds at
that path must match the event; adding one requirement the event cannot meet (anything-but
its own value, exists:false on a present field, a value it does not hold) must not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamfn.filtering import EventPattern

Path = tuple[str, ...]

keys = st.text(max_size=5).filter(lambda key: key != "$or")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)
events = st.dictionaries(keys, json_values, min_size=1, max_size=5)

PROPERTIES = settings(max_examples=200, deadline=None)


def leaves(obj: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, list[Any]]]:
    """Every path reached through objects only, with the scalars found there."""
    for key, value in obj.items():
        if isinstance(value, dict):
            yield from leaves(value, (*path, key))
        elif isinstance(value, list):
            if found := list(flat_scalars(value)):
                yield (*path, key), found
        else:
            yield (*path, key), [value]


def flat_scalars(values: list[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from flat_scalars(value)
        elif not isinstance(value, dict):
            yield value


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def escape_wildcard(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


def accepting(value: object, data: st.DataObject) -> dict[str, Any] | object:
    """A matcher that accepts ``value``, of a kind drawn at random among those that fit."""
    kinds = ["exact", "exists"]
    if isinstance(value, str):
        kinds += ["prefix", "suffix", "equals-ignore-case", "wildcard"]
    if is_number(value):
        kinds += ["numeric-range", "numeric-equals"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "exact":
        return value
    if kind == "exists":
        return {"exists": True}
    if kind in ("prefix", "suffix", "wildcard"):
        assert isinstance(value, str)
        cut = data.draw(st.integers(0, len(value)))
        if kind == "prefix":
            return {"prefix": value[:cut]}
        if kind == "suffix":
            return {"suffix": value[cut:]}
        resume = data.draw(st.integers(cut, len(value)))
        return {"wildcard": escape_wildcard(value[:cut]) + "*" + escape_wildcard(value[resume:])}
    if kind == "equals-ignore-case":
        assert isinstance(value, str)
        return {"equals-ignore-case": value.lower()}
    assert isinstance(value, int | float)
    if kind == "numeric-equals":
        return {"numeric": ["=", value]}
    margin = 1 + abs(value)
    return {"numeric": [">", value - margin, "<=", value + margin]}


def rejecting(found: list[Any], data: st.DataObject) -> dict[str, Any] | object:
    """A matcher that no scalar in ``found`` (all those at one path) satisfies."""
    kinds = ["exists-false"]
    if all(isinstance(v, str) for v in found) or all(is_number(v) for v in found):
        kinds.append("anything-but")
    if all(isinstance(v, str) for v in found):
        kinds.append("other-string")
    kind = data.draw(st.sampled_from(kinds))
    if kind == "exists-false":
        return {"exists": False}
    if kind == "anything-but":
        return {"anything-but": found}
    return str(max(found, key=len)) + "\x00"


def put(pattern: dict[str, Any], path: Path, matcher: object) -> None:
    node = pattern
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = [matcher]


def check(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert EventPattern.parse(pattern).matches(event) is expected, pattern
    assert EventPattern.parse(json.dumps(pattern)).matches(event) is expected, pattern


@PROPERTIES
@given(event=events, data=st.data())
def test_a_pattern_of_the_events_own_values_matches_it(
    event: dict[str, Any], data: st.DataObject
) -> None:
    candidates = list(leaves(event))
    assume(candidates)
    picked = data.draw(st.lists(st.sampled_from(candidates), max_size=5, unique_by=lambda c: c[0]))
    pattern: dict[str, Any] = {}
    for path, found in picked:
        put(pattern, path, accepting(data.draw(st.sampled_from(found)), data))
    put(pattern, ("absent \x01",), {"exists": False})  # no generated key has this shape
    check(pattern, event, True)


@PROPERTIES
@given(event=events, data=st.data())
def test_a_pattern_requiring_what_the_event_lacks_does_not_match(
    event: dict[str, Any], data: st.DataObject
) -> None:
    candidates = list(leaves(event))
    assume(candidates)
    picked = data.draw(
        st.lists(st.sampled_from(candidates), min_size=1, max_size=5, unique_by=lambda c: c[0])
    )
    pattern: dict[str, Any] = {}
    (bad_path, bad_found), *others = picked
    for path, found in others:
        put(pattern, path, accepting(data.draw(st.sampled_from(found)), data))
    put(pattern, bad_path, rejecting(bad_found, data))
    check(pattern, event, False)
