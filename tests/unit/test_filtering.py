"""EventBridge-style filter patterns: what a user can rely on when writing one.

Every matching case runs twice, with the pattern as a dict and as JSON text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamfn.errors import InvalidPatternError
from streamfn.filtering import MAX_FILTERS, EventPattern, compile_filters


def case(pattern: dict[str, Any], event: object, expected: bool, id: str) -> Any:
    return pytest.param(pattern, event, expected, id=id)


EXACT = [
    case({"source": ["aws.ec2"]}, {"source": "aws.ec2"}, True, "string"),
    case({"source": ["aws.ec2"]}, {"source": "aws.ec2 "}, False, "byte-for-byte"),
    case({"source": ["aws.ec2"]}, {"source": "AWS.EC2"}, False, "case-sensitive"),
    case({"name": ["café"]}, {"name": "café"}, True, "unicode"),
    case({"name": ["café"]}, {"name": "cafe\u0301"}, False, "unicode-not-normalized"),
    case({"source": ["a", "b"]}, {"source": "b"}, True, "list-is-or"),
    case({"source": ["a", "b"]}, {"source": "c"}, False, "list-none-equal"),
    case({"source": ["a"]}, {}, False, "absent"),
    case({"source": ["a"]}, {"source": {"a": 1}}, False, "object-is-not-a-value"),
    case({"s": ["a"], "r": ["x"]}, {"s": "a", "r": "y"}, False, "fields-are-and"),
    case({"s": ["a"], "r": ["x"]}, {"s": "a", "r": "x", "z": 1}, True, "unlisted-ignored"),
    case({"n": [300]}, {"n": 300}, True, "number"),
    case({"n": [300]}, {"n": 300.0}, True, "number-by-value"),
    case({"n": [3.0e2]}, {"n": 300}, True, "exponent-by-value"),
    case({"n": [300]}, {"n": "300"}, False, "number-is-not-string"),
    case({"n": ["300"]}, {"n": 300}, False, "string-is-not-number"),
    case({"n": [123456789012]}, {"n": 123456789012}, True, "account-number"),
    case({"n": [1]}, {"n": True}, False, "bool-is-not-one"),
    case({"n": [True]}, {"n": 1}, False, "one-is-not-bool"),
    case({"n": [True]}, {"n": True}, True, "true"),
    case({"n": [False]}, {"n": False}, True, "false"),
    case({"n": [False]}, {"n": 0}, False, "zero-is-not-false"),
    case({"n": ["true"]}, {"n": True}, False, "bool-is-not-string"),
]

NULL_AND_EMPTY = [
    case({"a": [None]}, {"a": None}, True, "null"),
    case({"a": [None]}, {}, False, "null-is-not-absent"),
    case({"a": [None]}, {"a": ""}, False, "null-is-not-empty"),
    case({"a": [""]}, {"a": ""}, True, "empty"),
    case({"a": [""]}, {"a": None}, False, "empty-is-not-null"),
    case({"a": [""]}, {}, False, "empty-is-not-absent"),
]

ARRAYS = [
    case({"r": ["arn:1"]}, {"r": ["arn:0", "arn:1"]}, True, "any-element"),
    case({"r": ["arn:1"]}, {"r": ["arn:0"]}, False, "no-element"),
    case({"r": ["arn:1"]}, {"r": []}, False, "empty-array"),
    case({"r": ["arn:1"]}, {"r": [["arn:0"], ["arn:1"]]}, True, "nested-arrays-flatten"),
    case({"r": [{"prefix": "x"}]}, {"r": ["y", "xz"]}, True, "operator-any-element"),
    case({"r": [{"numeric": [">", 5]}]}, {"r": [1, 10]}, True, "numeric-any-element"),
    case({"r": [{"numeric": [">", 5]}]}, {"r": [1, 2]}, False, "numeric-no-element"),
    case(
        {"people": {"first": ["Anna"], "last": ["Smith"]}},
        {"people": [{"first": "Anna", "last": "Jones"}, {"first": "Bo", "last": "Smith"}]},
        False,
        "fields-from-one-element",
    ),
    case(
        {"people": {"first": ["Anna"], "last": ["Smith"]}},
        {"people": [{"first": "Bo", "last": "Jones"}, {"first": "Anna", "last": "Smith"}]},
        True,
        "one-element-matches-all",
    ),
    case({"a": {"b": ["x"]}}, {"a": [[{"b": "x"}]]}, True, "nested-array-of-objects"),
    case({"a": {"b": ["x"]}}, {"a": [1, "x"]}, False, "array-without-objects"),
]

NESTED = [
    case({"detail": {"state": ["running"]}}, {"detail": {"state": "running"}}, True, "match"),
    case({"detail": {"state": ["running"]}}, {"detail": {"state": "off"}}, False, "value"),
    case({"detail": {"state": ["running"]}}, {"detail": "running"}, False, "not-an-object"),
    case({"detail": {"state": ["running"]}}, {"state": "running"}, False, "wrong-level"),
    case({"detail": {"state": ["running"]}}, {}, False, "absent-parent"),
    case({"a": {"b": {"c": [1]}}, "d": ["x"]}, {"a": {"b": {"c": 1}}, "d": "x"}, True, "deep"),
    case({"a": {"b": {"c": [1]}}, "d": ["x"]}, {"a": {"b": {"c": 2}}, "d": "x"}, False, "deep-no"),
]

OR = [
    case({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "1"}, True, "first-branch"),
    case({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "2"}, True, "second-branch"),
    case({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "2", "b": "1"}, False, "no-branch"),
    case({"s": ["x"], "$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "1"}, False, "and-with-field"),
    case({"s": ["x"], "$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"s": "x", "b": "2"}, True, "and-ok"),
    case(
        {"detail": {"$or": [{"c": [{"numeric": [">", 0]}]}, {"d": ["y"]}]}},
        {"detail": {"c": 0, "d": "y"}},
        True,
        "nested-level",
    ),
    case(
        {"$or": [{"a": ["1"]}, {"b": ["2"], "$or": [{"c": ["3"]}, {"d": ["4"]}]}]},
        {"b": "2", "d": "4"},
        True,
        "or-inside-or",
    ),
    case(
        {"$or": [{"a": ["1"]}, {"b": ["2"], "$or": [{"c": ["3"]}, {"d": ["4"]}]}]},
        {"b": "2"},
        False,
        "or-inside-or-no",
    ),
    case({"$or": [{"a": [{"exists": False}]}, {"b": ["x"]}]}, {}, True, "absent-branch"),
]

EXISTS = [
    case({"a": [{"exists": True}]}, {"a": "x"}, True, "true-string"),
    case({"a": [{"exists": True}]}, {"a": None}, True, "true-null-is-present"),
    case({"a": [{"exists": True}]}, {"a": ""}, True, "true-empty"),
    case({"a": [{"exists": True}]}, {"a": 0}, True, "true-zero"),
    case({"a": [{"exists": True}]}, {"a": False}, True, "true-false"),
    case({"a": [{"exists": True}]}, {"a": [1]}, True, "true-array"),
    case({"a": [{"exists": True}]}, {}, False, "true-absent"),
    case({"a": [{"exists": True}]}, {"a": {"b": 1}}, False, "true-object-is-not-a-leaf"),
    case({"a": [{"exists": True}]}, {"a": []}, False, "true-empty-array"),
    case({"a": [{"exists": False}]}, {}, True, "false-absent"),
    case({"a": [{"exists": False}]}, {"a": None}, False, "false-null"),
    case({"a": [{"exists": False}]}, {"a": "x"}, False, "false-string"),
    case({"a": [{"exists": False}]}, {"a": {"b": 1}}, True, "false-object"),
    case({"a": [{"exists": False}]}, {"a": []}, True, "false-empty-array"),
    case({"a": [{"exists": False}]}, {"a": [{"b": 1}]}, True, "false-array-of-objects"),
    case({"d": {"c": [{"exists": False}]}}, {}, True, "false-parent-absent"),
    case({"d": {"c": [{"exists": False}]}}, {"d": {"c": 1}}, False, "false-nested-present"),
    case({"d": {"c": [{"exists": False}]}}, {"d": [{"c": 1}, {"e": 2}]}, False, "false-every"),
    case({"d": {"c": [{"exists": False}]}}, {"d": [{"f": 1}, {"e": 2}]}, True, "false-none"),
    case(
        {"d": {"c": [{"exists": False}], "e": ["2"]}},
        {"d": [{"c": 1}, {"e": "2"}]},
        True,
        "false-tied-to-matching-element",
    ),
    case({"a": ["x", {"exists": False}]}, {}, True, "or-absent"),
    case({"a": ["x", {"exists": False}]}, {"a": "x"}, True, "or-value"),
    case({"a": ["x", {"exists": False}]}, {"a": "y"}, False, "or-neither"),
]

NUMERIC = [
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 0}, False, "open-bottom"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 0.0001}, True, "just-above"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5}, True, "closed-top"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5.0001}, False, "just-over"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": -1}, False, "below"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": "3"}, False, "string-is-not-number"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": True}, False, "bool-is-not-number"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": None}, False, "null"),
    case({"n": [{"numeric": [">", 0, "<=", 5]}]}, {}, False, "absent"),
    case({"n": [{"numeric": [">=", 0, "<", 5]}]}, {"n": 0}, True, "closed-bottom"),
    case({"n": [{"numeric": [">=", 0, "<", 5]}]}, {"n": 5}, False, "open-top"),
    case({"n": [{"numeric": ["=", 100]}]}, {"n": 100}, True, "equals"),
    case({"n": [{"numeric": ["=", 100]}]}, {"n": 100.0}, True, "equals-float"),
    case({"n": [{"numeric": ["=", 100]}]}, {"n": 101}, False, "not-equal"),
    case({"n": [{"numeric": [">=", 10]}]}, {"n": 10}, True, "ge"),
    case({"n": [{"numeric": [">=", 10]}]}, {"n": 9.99}, False, "ge-below"),
    case({"n": [{"numeric": ["<", 10]}]}, {"n": 9}, True, "lt"),
    case({"n": [{"numeric": ["<", 10]}]}, {"n": 10}, False, "lt-edge"),
    case({"n": [{"numeric": ["<=", 10]}]}, {"n": 10}, True, "le-edge"),
    case({"n": [{"numeric": [">", -5.5, "<", -1]}]}, {"n": -3}, True, "negative"),
    case({"n": [{"numeric": [">", 123456789012]}]}, {"n": 123456789013}, True, "big"),
    case({"n": [{"numeric": [">", 1, "<", 2]}, {"numeric": ["=", 9]}]}, {"n": 9}, True, "or"),
]

PREFIX_SUFFIX = [
    case({"r": [{"prefix": "us-"}]}, {"r": "us-east-1"}, True, "prefix"),
    case({"r": [{"prefix": "us-"}]}, {"r": "eu-west-1"}, False, "prefix-no"),
    case({"r": [{"prefix": "us-"}]}, {"r": "us"}, False, "prefix-shorter"),
    case({"r": [{"prefix": "us-"}]}, {"r": "US-EAST-1"}, False, "prefix-case"),
    case({"r": [{"prefix": "1"}]}, {"r": 12}, False, "prefix-number"),
    case({"r": [{"prefix": "n"}]}, {"r": None}, False, "prefix-null"),
    case({"r": [{"prefix": ""}]}, {"r": "anything"}, True, "prefix-empty"),
    case({"r": [{"prefix": "a"}, {"prefix": "b"}]}, {"r": "b1"}, True, "prefixes-or"),
    case({"s": [{"prefix": {"equals-ignore-case": "EventB"}}]}, {"s": "eventbus"}, True, "pic"),
    case({"s": [{"prefix": {"equals-ignore-case": "EventB"}}]}, {"s": "event"}, False, "pic-no"),
    case({"f": [{"suffix": ".png"}]}, {"f": "a.png"}, True, "suffix"),
    case({"f": [{"suffix": ".png"}]}, {"f": "a.PNG"}, False, "suffix-case"),
    case({"f": [{"suffix": ".png"}]}, {"f": "a.png.bak"}, False, "suffix-no"),
    case({"f": [{"suffix": {"equals-ignore-case": ".png"}}]}, {"f": "A.PNG"}, True, "sic"),
]

EQUALS_IGNORE_CASE = [
    case({"n": [{"equals-ignore-case": "alice"}]}, {"n": "ALICE"}, True, "upper"),
    case({"n": [{"equals-ignore-case": "alice"}]}, {"n": "Alice"}, True, "mixed"),
    case({"n": [{"equals-ignore-case": "alice"}]}, {"n": "alicex"}, False, "longer"),
    case({"n": [{"equals-ignore-case": "äbc"}]}, {"n": "ÄBC"}, True, "non-ascii"),
    case({"n": [{"equals-ignore-case": "5"}]}, {"n": 5}, False, "number"),
]

WILDCARD = [
    case({"f": [{"wildcard": "*.png"}]}, {"f": "a.png"}, True, "leading"),
    case({"f": [{"wildcard": "*.png"}]}, {"f": ".png"}, True, "star-matches-nothing"),
    case({"f": [{"wildcard": "*.png"}]}, {"f": "a.png.bak"}, False, "anchored"),
    case({"f": [{"wildcard": "dir/*/file"}]}, {"f": "dir/a/b/file"}, True, "middle"),
    case({"f": [{"wildcard": "a*b*c"}]}, {"f": "aXbYc"}, True, "two-stars"),
    case({"f": [{"wildcard": "a*b*c"}]}, {"f": "acb"}, False, "two-stars-order"),
    case({"f": [{"wildcard": "*"}]}, {"f": ""}, True, "star-alone"),
    case({"f": [{"wildcard": "*"}]}, {"f": 5}, False, "not-a-string"),
    case({"f": [{"wildcard": "a*"}]}, {"f": "a\nb"}, True, "crosses-newlines"),
    case({"f": [{"wildcard": "a.c*"}]}, {"f": "abc"}, False, "dot-is-literal"),
    case({"f": [{"wildcard": "a.c*"}]}, {"f": "a.cd"}, True, "dot-literal-match"),
    case({"f": [{"wildcard": "a\\*b"}]}, {"f": "a*b"}, True, "escaped-star"),
    case({"f": [{"wildcard": "a\\*b"}]}, {"f": "axb"}, False, "escaped-star-is-literal"),
    case({"f": [{"wildcard": "a\\\\b"}]}, {"f": "a\\b"}, True, "escaped-backslash"),
    case({"f": [{"wildcard": "a\\\\*"}]}, {"f": "a\\xyz"}, True, "backslash-then-star"),
    case({"f": [{"wildcard": "\\**"}]}, {"f": "*abc"}, True, "literal-star-then-star"),
    case({"f": [{"wildcard": "\\**"}]}, {"f": "abc"}, False, "literal-star-required"),
    case({"f": [{"wildcard": "plain"}]}, {"f": "plain"}, True, "no-star"),
]

ANYTHING_BUT = [
    case({"s": [{"anything-but": "init"}]}, {"s": "running"}, True, "string"),
    case({"s": [{"anything-but": "init"}]}, {"s": "init"}, False, "string-excluded"),
    case({"s": [{"anything-but": "init"}]}, {}, False, "absent-never-matches"),
    case({"s": [{"anything-but": "init"}]}, {"s": None}, True, "null-is-a-value"),
    case({"s": [{"anything-but": "init"}]}, {"s": 5}, True, "number-is-not-the-string"),
    case({"s": [{"anything-but": "init"}]}, {"s": {"x": 1}}, False, "object-is-not-a-value"),
    case({"s": [{"anything-but": ["a", "b"]}]}, {"s": "c"}, True, "list"),
    case({"s": [{"anything-but": ["a", "b"]}]}, {"s": "b"}, False, "list-excluded"),
    case({"n": [{"anything-but": [100, 200]}]}, {"n": 150}, True, "numbers"),
    case({"n": [{"anything-but": [100, 200]}]}, {"n": 100.0}, False, "numbers-by-value"),
    case({"n": [{"anything-but": [100, 200]}]}, {"n": "100"}, True, "string-is-not-number"),
    case({"n": [{"anything-but": 1}]}, {"n": True}, True, "bool-is-not-number"),
    case({"n": [{"anything-but": 123}]}, {"n": 123}, False, "number-excluded"),
    case({"s": [{"anything-but": {"prefix": "init"}}]}, {"s": "initial"}, False, "prefix"),
    case({"s": [{"anything-but": {"prefix": "init"}}]}, {"s": "running"}, True, "prefix-ok"),
    case({"s": [{"anything-but": {"prefix": ["a", "b"]}}]}, {"s": "bx"}, False, "prefixes"),
    case({"s": [{"anything-but": {"suffix": ".png"}}]}, {"s": "a.png"}, False, "suffix"),
    case({"s": [{"anything-but": {"suffix": ".png"}}]}, {"s": "a.jpg"}, True, "suffix-ok"),
    case({"s": [{"anything-but": {"equals-ignore-case": "Init"}}]}, {"s": "INIT"}, False, "eic"),
    case({"s": [{"anything-but": {"equals-ignore-case": ["a", "B"]}}]}, {"s": "b"}, False, "eics"),
    case({"s": [{"anything-but": {"equals-ignore-case": ["a", "B"]}}]}, {"s": "c"}, True, "eic-ok"),
    case({"p": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"p": "/usr/lib/x"}, False, "wc"),
    case({"p": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"p": "/usr/bin/x"}, True, "wc-ok"),
    case({"s": [{"anything-but": "x"}]}, {"s": ["x", "y"]}, True, "array-any-element"),
    case({"s": [{"anything-but": "x"}]}, {"s": ["x"]}, False, "array-all-excluded"),
    case({"s": [{"anything-but": "x"}]}, {"s": []}, False, "empty-array"),
]

CIDR = [
    case({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.33"}, True, "inside"),
    case({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.1"}, False, "outside"),
    case({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "not-an-ip"}, False, "not-an-address"),
    case({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": 10}, False, "not-a-string"),
    case({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True, "ipv6"),
]

MIXED = [
    case({"v": ["exact", {"prefix": "a"}, {"numeric": [">", 5]}]}, {"v": "ab"}, True, "prefix"),
    case({"v": ["exact", {"prefix": "a"}, {"numeric": [">", 5]}]}, {"v": 6}, True, "numeric"),
    case({"v": ["exact", {"prefix": "a"}, {"numeric": [">", 5]}]}, {"v": "exact"}, True, "exact"),
    case({"v": ["exact", {"prefix": "a"}, {"numeric": [">", 5]}]}, {"v": 3}, False, "none"),
    case({"a": ["x"]}, "x", False, "event-not-an-object"),
    case({"a": ["x"]}, [{"a": "y"}, {"a": "x"}], True, "event-array-of-objects"),
]


def check(pattern: dict[str, Any], event: object, expected: bool) -> None:
    assert EventPattern.parse(pattern).matches(event) is expected
    assert EventPattern.parse(json.dumps(pattern)).matches(event) is expected


@pytest.mark.parametrize(("pattern", "event", "expected"), EXACT)
def test_exact_values(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), NULL_AND_EMPTY)
def test_null_and_empty_string(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), ARRAYS)
def test_event_arrays_match_on_any_element(
    pattern: dict[str, Any], event: object, expected: bool
) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), NESTED)
def test_nested_objects(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), OR)
def test_or(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), EXISTS)
def test_exists(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), NUMERIC)
def test_numeric(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), PREFIX_SUFFIX)
def test_prefix_and_suffix(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), EQUALS_IGNORE_CASE)
def test_equals_ignore_case(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), WILDCARD)
def test_wildcard(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), ANYTHING_BUT)
def test_anything_but(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), CIDR)
def test_cidr(pattern: dict[str, Any], event: object, expected: bool) -> None:
    check(pattern, event, expected)


@pytest.mark.parametrize(("pattern", "event", "expected"), MIXED)
def test_alternatives_of_different_kinds(
    pattern: dict[str, Any], event: object, expected: bool
) -> None:
    check(pattern, event, expected)


def err(pattern: object, *fragments: str, id: str | None = None) -> Any:
    return pytest.param(pattern, fragments, id=id or fragments[0][:40])


INVALID = [
    err([{"a": ["x"]}], "(root): must be a JSON object, got list", id="not-an-object"),
    err("[1, 2]", "(root): must be a JSON object", id="json-not-an-object"),
    err('{"a": ["x"', "(root): invalid JSON at line 1, column 11", id="json-truncated"),
    err('{"a": ["x"],\n "b": }', "invalid JSON at line 2, column 7", id="json-line-column"),
    err({}, "(root): empty object is not allowed", id="empty-pattern"),
    err({"a": "x"}, 'a: must be a list like ["x"] or an object, got string "x"', id="leaf-str"),
    err({"d": {"a": 5}}, "d.a: must be a list", id="leaf-number"),
    err({"a": []}, "a: empty list is not allowed", id="empty-list"),
    err({"a": {}}, "a: empty object is not allowed", id="empty-object"),
    err({"a": [[1]]}, "a: match values must be strings, numbers, booleans or null", id="list"),
    err({1: ["x"]}, "(root): field names must be strings, got number 1", id="key-not-str"),
    err({"d": {"x": [{"foo": 1}]}}, 'd.x: unknown operator "foo"; expected one of', id="op"),
    err({"a": [{}]}, "a: a matcher must be an object with exactly one key, got none", id="0k"),
    err(
        {"a": [{"prefix": "x", "suffix": "y"}]}, 'exactly one key, got "prefix", "suffix"', id="2k"
    ),
    err({"a": [{"prefix": 5}]}, "a: prefix takes a string or", id="prefix-number"),
    err({"a": [{"prefix": {"x": "y"}}]}, "a: prefix takes a string or", id="prefix-object"),
    err({"a": [{"suffix": ["x"]}]}, "a: suffix takes a string or", id="suffix-list"),
    err({"a": [{"equals-ignore-case": 5}]}, "a: equals-ignore-case takes a string", id="eic"),
    err({"a": [{"exists": "true"}]}, 'a: exists takes true or false, got string "true"', id="ex"),
    err({"a": [{"exists": 1}]}, "a: exists takes true or false, got number 1", id="exists-1"),
    err(
        {"detail": {"amount": [{"numeric": ["!=", 5]}]}},
        'detail.amount: numeric operator "!=" is not one of =, <, <=, >, >=',
        id="numeric-operator",
    ),
    err({"n": [{"numeric": [">", "5"]}]}, 'n: numeric operand of ">" must be a number', id="nstr"),
    err({"n": [{"numeric": [">", True]}]}, "must be a number, got boolean true", id="nbool"),
    err({"n": [{"numeric": []}]}, "n: numeric takes a list like", id="numeric-empty"),
    err({"n": [{"numeric": 5}]}, "n: numeric takes a list like", id="numeric-not-list"),
    err({"n": [{"numeric": [">"]}]}, 'n: numeric operator ">" has no operand', id="no-operand"),
    err({"n": [{"numeric": [5, ">"]}]}, "numeric operator 5 is not one of", id="operand-first"),
    err({"n": [{"numeric": ["<", 5, ">", 1]}]}, "n: numeric takes one comparison, or a range"),
    err({"n": [{"numeric": [">", 1, ">", 2]}]}, "numeric takes one comparison, or a range"),
    err({"n": [{"numeric": ["=", 1, "<", 2]}]}, "numeric takes one comparison, or a range"),
    err({"n": [{"numeric": [">", 1, "<", 5, "=", 3]}]}, "numeric takes one comparison, or a"),
    err({"n": [{"numeric": [">", 5, "<", 5]}]}, "n: numeric range is empty", id="empty-range"),
    err({"n": [{"numeric": [">=", 9, "<=", 1]}]}, "n: numeric range is empty", id="upside-down"),
    err({"n": [float("nan")]}, "n: numbers must be finite, got nan", id="nan"),
    err('{"n": [NaN]}', "n: numbers must be finite", id="json-nan"),
    err('{"n": [1e400]}', "n: numbers must be finite, got inf", id="json-overflow"),
    err({"n": [{"numeric": [">", float("inf")]}]}, "n: numbers must be finite, got inf"),
    err({"n": [{"anything-but": [1, float("nan")]}]}, "n: numbers must be finite, got nan"),
    err({"$or": {"a": ["x"]}}, "$or: must be a list of at least two objects", id="or-object"),
    err({"$or": []}, "$or: must be a list of at least two objects", id="or-empty"),
    err({"$or": [{"a": ["x"]}]}, "$or: must be a list of at least two objects", id="or-one"),
    err({"$or": [{"a": ["x"]}, "b"]}, '$or[1]: must be a JSON object, got string "b"', id="or-s"),
    err({"x": {"$or": [{"a": ["1"]}, {"b": 2}]}}, "x.$or[1].b: must be a list", id="or-path"),
    err({"a": [{"anything-but": None}]}, "a: anything-but takes a string, number", id="ab-null"),
    err({"a": [{"anything-but": True}]}, "a: anything-but takes a string, number", id="ab-bool"),
    err({"a": [{"anything-but": []}]}, "a: anything-but list must not be empty", id="ab-empty"),
    err({"a": [{"anything-but": ["a", 1]}]}, "all strings or all numbers", id="ab-mixed"),
    err({"a": [{"anything-but": [None]}]}, "all strings or all numbers", id="ab-null-list"),
    err({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "takes prefix, suffix, eq", id="ab-op"),
    err({"a": [{"anything-but": {"prefix": ""}}]}, "anything-but prefix must not be empty"),
    err({"a": [{"anything-but": {"prefix": 5}}]}, "anything-but prefix takes a string", id="abp"),
    err({"a": [{"anything-but": {"suffix": []}}]}, "anything-but suffix takes a string", id="abs"),
    err({"a": [{"anything-but": {}}]}, "anything-but must be an object with exactly one key"),
    err(
        {"a": [{"wildcard": "a**b"}]},
        'a: wildcard "a**b": consecutive "*" at position 1',
        id="wc-**",
    ),
    err({"a": [{"wildcard": "a\\b"}]}, 'must escape "*" or', id="wildcard-bad-escape"),
    err({"a": [{"wildcard": "a\\"}]}, 'must escape "*" or', id="wildcard-trailing-backslash"),
    err({"a": [{"wildcard": 5}]}, "a: wildcard takes a string, got number 5", id="wc-number"),
    err({"a": [{"anything-but": {"wildcard": "x**"}}]}, "consecutive", id="ab-wildcard"),
    err({"ip": [{"cidr": "10.0.0.1"}]}, 'ip: cidr takes a network like "10.0.0.0/24"', id="c1"),
    err({"ip": [{"cidr": "300.0.0.0/8"}]}, "ip: cidr takes a network like", id="cidr-bad"),
    err({"ip": [{"cidr": 5}]}, "ip: cidr takes a string", id="cidr-number"),
    err({"a": ["x" * 5000]}, "(root): pattern is 5010 characters of JSON; the limit is 4096"),
    err(json.dumps({"a": ["x" * 5000]}), "(root): pattern is 5011 characters", id="long-text"),
]


@pytest.mark.parametrize(("pattern", "fragments"), INVALID)
def test_invalid_patterns_say_what_and_where(pattern: Any, fragments: tuple[str, ...]) -> None:
    with pytest.raises(InvalidPatternError) as caught:
        EventPattern.parse(pattern)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_invalid_pattern_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty object"):
        EventPattern.parse({})


def test_pattern_of_exactly_the_limit_is_accepted() -> None:
    padding = 4096 - len(json.dumps({"a": [""]}, separators=(",", ":")))
    pattern = {"a": ["x" * padding]}
    assert EventPattern.parse(pattern).matches({"a": "x" * padding})
    text = json.dumps(pattern, separators=(",", ":"))
    assert len(text) == 4096
    assert EventPattern.parse(text).matches({"a": "x" * padding})
    with pytest.raises(InvalidPatternError, match="4097 characters"):
        EventPattern.parse(text + " ")


def test_source_is_canonical_json() -> None:
    from_text = EventPattern.parse('{ "b": ["x"],\n  "a": [1, {"prefix": "é"}] }')
    from_dict = EventPattern.parse({"a": [1, {"prefix": "é"}], "b": ["x"]})
    assert from_text.source == '{"a":[1,{"prefix":"é"}],"b":["x"]}'
    assert from_text == from_dict
    assert hash(from_text) == hash(from_dict)
    assert repr(from_text) == f"EventPattern({from_text.source!r})"


def test_duplicate_keys_in_json_text_last_wins() -> None:
    pattern = EventPattern.parse('{"a": ["x"], "a": ["y"]}')
    assert pattern.matches({"a": "y"})
    assert not pattern.matches({"a": "x"})


def test_compile_filters_of_nothing_is_no_filter() -> None:
    assert compile_filters([]) is None


def test_compile_filters_ors_the_patterns() -> None:
    matches = compile_filters(
        [{"a": ["1"]}, '{"b": [{"numeric": [">", 5]}]}', EventPattern.parse({"c": [None]})]
    )
    assert matches is not None
    assert matches({"a": "1"})
    assert matches({"b": 6})
    assert matches({"c": None})
    assert not matches({"a": "2", "b": 5})


def test_compile_filters_of_one_pattern() -> None:
    matches = compile_filters(['{"a": ["1"]}'])
    assert matches is not None
    assert matches({"a": "1"})
    assert not matches({"a": "2"})


def test_compile_filters_limits_the_count() -> None:
    with pytest.raises(InvalidPatternError, match=f"at most {MAX_FILTERS} patterns.*got 6"):
        compile_filters([{"a": [str(i)]} for i in range(6)])


def test_compile_filters_names_the_bad_pattern() -> None:
    with pytest.raises(InvalidPatternError, match=r"^filters\[1\]: a: empty list is not allowed"):
        compile_filters([{"a": ["x"]}, {"a": []}])


@pytest.mark.parametrize("single", ['{"a": ["x"]}', {"a": ["x"]}])
def test_compile_filters_wants_a_list(single: Any) -> None:
    with pytest.raises(InvalidPatternError, match="expected a list of patterns"):
        compile_filters(single)
