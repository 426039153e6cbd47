"""EventBridge content filtering, compiled once into a tree of matcher closures.

Theory of operation
-------------------
:meth:`EventPattern.parse` validates a pattern (a dict, or its JSON text) in one recursive
walk and compiles it into closures shaped like the pattern:

* an **object node** matches a JSON object when every listed field passes (AND) and each
  ``$or`` group at that level has a passing branch. A field costs one ``dict.get``; its
  value goes to a child: another object node, or a leaf.
* a **leaf** is the list of matchers under a field, folded into one predicate over a
  scalar (OR): exact values become one ``frozenset`` lookup, all prefixes one
  ``str.startswith(tuple)``, wildcards a precompiled regex, numeric ranges two comparisons.

:meth:`EventPattern.matches` calls the root closure; nothing is parsed or compiled per event.

Semantics: EventBridge's, as implemented by aws/event-ruler (* marks a choice of ours)
---------------------------------------------------------------------------------------
* Unlisted event fields are ignored. A leaf matches a present scalar (string, number,
  boolean, null); an object is not a leaf value, so it counts as absent.
* An event array matches when ANY element does (nested arrays are flattened). Under a
  pattern object one element must satisfy the whole sub-pattern ("array consistency");
  an array without objects counts as absent.
* ``exists: false`` matches an absent field, an object, or an array without scalars.
  *A sub-pattern made only of ``exists: false`` leaves must hold for EVERY element of an
  event array, as event-ruler does when no positive match ties it to one element.
* Numbers compare by value, like EventBridge (event-ruler adds a numeric-equality matcher
  for each number in a pattern): ``300`` matches ``300``, ``300.0`` and ``3e2``. The
  Lambda guide speaks of string form, but a decoded event has none. Booleans are never
  numbers. *Full double precision; EventBridge's ±5e9 / 6-decimal limits are not enforced.
* ``anything-but`` matches any present scalar (null and numbers too) that its inner
  matcher rejects, never an absent field; its list holds only strings or only numbers.
  *Its prefix/suffix/equals-ignore-case/wildcard forms take a string or a list of them.
* ``wildcard``: ``*`` is any run of characters, ``\\*`` a star, ``\\\\`` a backslash;
  other escapes and ``**`` are rejected. *No complexity scoring.
* Case-insensitive matchers compare ``str.lower()`` forms.
* ``$or`` takes at least two objects (EventBridge rejects fewer), at any object level.
* In JSON text a duplicate key's last value wins. A pattern is at most 4096 characters of
  JSON: the text as given, or the compact serialization of a dict.
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, NoReturn, TypeGuard

from streamfn.errors import InvalidPatternError

__all__ = ["MAX_FILTERS", "MAX_PATTERN_LENGTH", "EventPattern", "compile_filters"]

MAX_PATTERN_LENGTH: Final = 4096
MAX_FILTERS: Final = 5  # AWS's default quota (10 on request)

Predicate = Callable[[object], bool]

_MISSING: Final = object()  # the value a node sees for an absent field
# Exact classes, as JSON decoders produce them (fast to test); bool is not a number here.
_NUMBERS: Final = frozenset({int, float})
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OPERATORS: Final = (
    "anything-but, cidr, equals-ignore-case, exists, numeric, prefix, suffix, wildcard"
)
_EXCLUDABLE: Final = ("prefix", "suffix", "equals-ignore-case", "wildcard")


class _Compiled(NamedTuple):
    match: Predicate  # called with the field's value, or _MISSING
    absent_ok: bool  # matches when the field is absent
    negative_only: bool  # satisfied only by absence: nothing but exists:false leaves


class EventPattern:
    """One compiled EventBridge-style pattern; build it with :meth:`parse`.

    Immutable: ``matches`` may be called from any task or thread. Two patterns are equal
    when their canonical ``source`` texts are.
    """

    __slots__ = ("_match", "source")

    source: str
    """The pattern as canonical JSON (sorted keys, no spaces), for logs and errors."""

    def __init__(self, match: Predicate, source: str) -> None:
        self._match = match
        self.source = source

    @classmethod
    def parse(cls, pattern: Mapping[str, object] | str) -> EventPattern:
        """Validate and compile ``pattern``, a dict or its JSON text.

        Raises :class:`~streamfn.errors.InvalidPatternError` whose message starts with the
        dotted field path (``(root)`` for the pattern itself) and says what is wrong there.
        """
        if isinstance(pattern, str):
            _check_length(len(pattern))
            try:
                decoded: object = json.loads(pattern)
            except json.JSONDecodeError as exc:
                _fail("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        else:
            decoded = pattern
        try:
            root = _compile_object(decoded, "")
        except RecursionError:
            _fail("", "pattern is nested too deeply")
        source = json.dumps(
            decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=dict
        )
        _check_length(len(source))
        return cls(root.match, source)

    def matches(self, event: object) -> bool:
        """Whether ``event``, an already-decoded JSON value (normally a dict), matches."""
        return self._match(event)

    def __repr__(self) -> str:
        return f"EventPattern({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventPattern) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def compile_filters(
    patterns: Sequence[Mapping[str, object] | str | EventPattern],
) -> Predicate | None:
    """Compile up to :data:`MAX_FILTERS` patterns into one predicate that ORs them.

    Returns ``None`` for an empty list: no filtering, every record passes. An error names
    the pattern's index first, e.g. ``filters[1]: detail.state: ...``.
    """
    if isinstance(patterns, str | Mapping):
        raise InvalidPatternError("filters: expected a list of patterns, got a single pattern")
    if not patterns:
        return None
    if len(patterns) > MAX_FILTERS:
        raise InvalidPatternError(
            f"filters: at most {MAX_FILTERS} patterns are allowed, got {len(patterns)}"
        )
    compiled: list[EventPattern] = []
    for index, pattern in enumerate(patterns):
        try:
            compiled.append(
                pattern if isinstance(pattern, EventPattern) else EventPattern.parse(pattern)
            )
        except InvalidPatternError as exc:
            raise InvalidPatternError(f"filters[{index}]: {exc}") from None
    if len(compiled) == 1:
        return compiled[0]._match
    matchers = tuple(pattern._match for pattern in compiled)

    def any_pattern(event: object) -> bool:
        for match in matchers:  # noqa: SIM110 - any(genexpr) is slower on this hot path
            if match(event):
                return True
        return False

    return any_pattern


# --- objects and $or -----------------------------------------------------------------------


def _compile_object(pattern: object, path: str) -> _Compiled:
    if not isinstance(pattern, Mapping):
        _fail(path, f"must be a JSON object, got {_show(pattern)}")
    if not pattern:
        _fail(path, "empty object is not allowed")
    fields: list[tuple[str, _Compiled]] = []
    groups: list[tuple[_Compiled, ...]] = []
    for key, value in pattern.items():
        if not isinstance(key, str):
            _fail(path, f"field names must be strings, got {_show(key)}")
        where = f"{path}.{key}" if path else key
        if key == "$or":
            groups.append(_compile_or(value, where))
        elif isinstance(value, Mapping):
            fields.append((key, _compile_object(value, where)))
        elif isinstance(value, list):
            fields.append((key, _compile_leaf(value, where)))
        else:
            _fail(where, f'must be a list like ["x"] or an object, got {_show(value)}')
    absent_ok = all(c.absent_ok for _, c in fields) and all(
        any(branch.absent_ok for branch in group) for group in groups
    )
    negative_only = all(c.negative_only for _, c in fields) and all(
        branch.negative_only for group in groups for branch in group
    )
    checks = tuple((key, c.match) for key, c in fields)
    or_groups = tuple(tuple(branch.match for branch in group) for group in groups)

    def node(value: object) -> bool:
        if isinstance(value, dict):
            get = value.get
            for key, check in checks:
                if not check(get(key, _MISSING)):
                    return False
            for branches in or_groups:
                for branch in branches:
                    if branch(value):
                        break
                else:
                    return False
            return True
        if isinstance(value, list):
            objects = list(_objects(value))
            if not objects:
                return absent_ok
            return all(map(node, objects)) if negative_only else any(map(node, objects))
        return absent_ok

    return _Compiled(node, absent_ok, negative_only)


def _compile_or(value: object, path: str) -> tuple[_Compiled, ...]:
    if not isinstance(value, list) or len(value) < 2:
        _fail(path, f"must be a list of at least two objects, got {_show(value)}")
    return tuple(_compile_object(item, f"{path}[{i}]") for i, item in enumerate(value))


# --- leaves --------------------------------------------------------------------------------


class _AnyOf:
    """The alternatives of one leaf (or of one anything-but), folded into one predicate."""

    def __init__(self) -> None:
        self.values: set[object] = set()  # strings, numbers, None
        self.bools: set[bool] = set()  # kept apart: True == 1 in Python, not in JSON
        self.affixes: dict[str, list[str]] = {"prefix": [], "suffix": []}
        self.folded: set[str] = set()  # equals-ignore-case, lower-cased
        self.others: list[Predicate] = []
        self.absent_ok = False  # an exists:false was seen

    def build(self) -> Predicate | None:
        parts: list[Predicate] = []
        if self.values or self.bools:
            parts.append(_exact(frozenset(self.values), frozenset(self.bools)))
        if prefixes := tuple(self.affixes["prefix"]):
            parts.append(lambda v: isinstance(v, str) and v.startswith(prefixes))
        if suffixes := tuple(self.affixes["suffix"]):
            parts.append(lambda v: isinstance(v, str) and v.endswith(suffixes))
        if folded := frozenset(self.folded):
            parts.append(lambda v: isinstance(v, str) and v.lower() in folded)
        parts += self.others
        if len(parts) <= 1:
            return parts[0] if parts else None
        alternatives = tuple(parts)

        def any_of(value: object) -> bool:
            for alternative in alternatives:  # noqa: SIM110 - any(genexpr) is slower
                if alternative(value):
                    return True
            return False

        return any_of


def _compile_leaf(items: list[object], path: str) -> _Compiled:
    if not items:
        _fail(path, "empty list is not allowed; give at least one value or matcher")
    alternatives = _AnyOf()
    for item in items:
        if isinstance(item, Mapping):
            op, arg = _single_key(item, path, "a matcher")
            _add_matcher(alternatives, op, arg, path)
        else:
            _add_value(alternatives, item, path)
    pred = alternatives.build()
    absent_ok = alternatives.absent_ok
    return _Compiled(_leaf(pred or _never, absent_ok), absent_ok, absent_ok and pred is None)


def _leaf(pred: Predicate, absent_ok: bool) -> Predicate:
    def leaf(value: object) -> bool:
        if value.__class__ in _SCALARS:
            return pred(value)
        if isinstance(value, list):
            seen = False
            for item in _scalars(value):
                if pred(item):
                    return True
                seen = True
            return absent_ok and not seen
        return absent_ok  # _MISSING, or an object: not a leaf value

    return leaf


def _add_value(alternatives: _AnyOf, value: object, path: str) -> None:
    if isinstance(value, bool):
        alternatives.bools.add(value)
    elif value is None or isinstance(value, str) or _is_number(value, path):
        alternatives.values.add(value)
    else:
        _fail(path, f"match values must be strings, numbers, booleans or null, got {_show(value)}")


def _add_matcher(alternatives: _AnyOf, op: str, arg: object, path: str) -> None:
    if op in ("prefix", "suffix"):
        needle = arg.get("equals-ignore-case") if isinstance(arg, Mapping) and len(arg) == 1 else 0
        if isinstance(arg, str):
            alternatives.affixes[op].append(arg)
        elif isinstance(needle, str):
            alternatives.others.append(_affix_ignore_case(op, needle.lower()))
        else:
            _fail(
                path, f'{op} takes a string or {{"equals-ignore-case": string}}, got {_show(arg)}'
            )
    elif op in ("equals-ignore-case", "wildcard", "cidr"):
        if not isinstance(arg, str):
            _fail(path, f"{op} takes a string, got {_show(arg)}")
        if op == "equals-ignore-case":
            alternatives.folded.add(arg.lower())
        else:
            alternatives.others.append(
                _wildcard(arg, path) if op == "wildcard" else _cidr(arg, path)
            )
    elif op == "numeric":
        alternatives.others.append(_numeric(arg, path))
    elif op == "exists":
        if not isinstance(arg, bool):
            _fail(path, f"exists takes true or false, got {_show(arg)}")
        if arg:
            alternatives.others.append(_always)
        else:
            alternatives.absent_ok = True
    elif op == "anything-but":
        alternatives.others.append(_anything_but(arg, path))
    else:
        _fail(path, f"unknown operator {_show(op, bare=True)}; expected one of {_OPERATORS}")


def _affix_ignore_case(op: str, needle: str) -> Predicate:
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.lower().startswith(needle)
    return lambda v: isinstance(v, str) and v.lower().endswith(needle)


def _anything_but(arg: object, path: str) -> Predicate:
    inner = _AnyOf()
    if isinstance(arg, Mapping):
        op, value = _single_key(arg, path, "anything-but")
        if op not in _EXCLUDABLE:
            _fail(path, f"anything-but takes {', '.join(_EXCLUDABLE)}, got {_show(op, bare=True)}")
        names = value if isinstance(value, list) else [value]
        strings = [name for name in names if isinstance(name, str)]
        if not strings or len(strings) != len(names):
            _fail(path, f"anything-but {op} takes a string or strings, got {_show(value)}")
        if op in ("prefix", "suffix"):
            if "" in strings:
                _fail(path, f"anything-but {op} must not be empty")
            inner.affixes[op] += strings
        elif op == "equals-ignore-case":
            inner.folded.update(name.lower() for name in strings)
        else:
            inner.others += [_wildcard(name, path) for name in strings]
    elif isinstance(arg, list):
        if not arg:
            _fail(path, "anything-but list must not be empty")
        if not all(isinstance(v, str) for v in arg) and not all(_is_number(v, path) for v in arg):
            _fail(path, f"anything-but list must be all strings or all numbers: {_show(arg)}")
        for value in arg:
            _add_value(inner, value, path)
    elif isinstance(arg, str) or _is_number(arg, path):
        _add_value(inner, arg, path)
    else:
        _fail(path, f"anything-but takes a string, number, list or object, got {_show(arg)}")
    excluded = inner.build() or _never
    return lambda v: not excluded(v)


def _numeric(arg: object, path: str) -> Predicate:
    if not isinstance(arg, list) or not arg:
        _fail(path, f'numeric takes a list like [">", 0, "<=", 5], got {_show(arg)}')
    terms: list[tuple[str, float]] = []
    for i in range(0, len(arg), 2):
        op = arg[i]
        if not isinstance(op, str) or op not in _COMPARE:
            _fail(path, f"numeric operator {_show(op, bare=True)} is not one of =, <, <=, >, >=")
        if i + 1 == len(arg):
            _fail(path, f'numeric operator "{op}" has no operand')
        bound = arg[i + 1]
        if not _is_number(bound, path):
            _fail(path, f'numeric operand of "{op}" must be a number, got {_show(bound)}')
        terms.append((op, bound))
    if len(terms) == 1:
        op, bound = terms[0]
        compare = _COMPARE[op]
        return lambda v: v.__class__ in _NUMBERS and compare(v, bound)
    if len(terms) > 2 or terms[0][0] not in (">", ">=") or terms[1][0] not in ("<", "<="):
        _fail(path, 'numeric takes one comparison, or a range: ">"/">=" then "<"/"<="')
    (low_op, low), (high_op, high) = terms
    if not low < high:
        _fail(path, f"numeric range is empty: lower bound {low} is not below upper bound {high}")
    above, below = _COMPARE[low_op], _COMPARE[high_op]
    return lambda v: v.__class__ in _NUMBERS and above(v, low) and below(v, high)


def _wildcard(text: str, path: str) -> Predicate:
    pieces: list[str] = []  # the literal runs between unescaped stars
    literal: list[str] = []
    where = f"wildcard {_show(text, bare=True)}"
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            char = text[i + 1 : i + 2]
            if char not in ("*", "\\"):
                _fail(path, f'{where}: "\\" at position {i} must escape "*" or "\\"')
            i += 1
        elif char == "*":
            if text[i + 1 : i + 2] == "*":
                _fail(path, f'{where}: consecutive "*" at position {i}')
            pieces.append("".join(literal))
            literal.clear()
            char = ""
        literal.append(char)
        i += 1
    if not pieces:  # no star: plain equality
        exact = "".join(literal)
        return lambda v: v == exact
    pieces.append("".join(literal))
    fullmatch = re.compile(".*".join(map(re.escape, pieces)), re.DOTALL).fullmatch
    return lambda v: isinstance(v, str) and fullmatch(v) is not None


def _cidr(arg: str, path: str) -> Predicate:
    try:
        if "/" not in arg:
            raise ValueError("no prefix length")
        network = ipaddress.ip_network(arg, strict=False)
    except ValueError as exc:
        _fail(path, f'cidr takes a network like "10.0.0.0/24", got {_show(arg)} ({exc})')

    def in_network(value: object) -> bool:
        try:
            return isinstance(value, str) and ipaddress.ip_address(value) in network
        except ValueError:
            return False

    return in_network


def _exact(values: frozenset[object], bools: frozenset[bool]) -> Predicate:
    def exact(value: object) -> bool:
        if value.__class__ is bool:
            return value in bools
        return value in values

    return exact


def _always(value: object) -> bool:
    return True


def _never(value: object) -> bool:
    return False


# --- helpers -------------------------------------------------------------------------------


def _scalars(values: list[Any]) -> Iterator[object]:
    for value in values:
        if isinstance(value, list):
            yield from _scalars(value)
        elif not isinstance(value, dict):
            yield value


def _objects(values: list[Any]) -> Iterator[dict[str, object]]:
    for value in values:
        if isinstance(value, list):
            yield from _objects(value)
        elif isinstance(value, dict):
            yield value


def _single_key(item: Mapping[Any, object], path: str, what: str) -> tuple[str, object]:
    if len(item) != 1:
        keys = ", ".join(_show(key, bare=True) for key in item) or "none"
        _fail(path, f"{what} must be an object with exactly one key, got {keys}")
    [(key, value)] = item.items()
    if not isinstance(key, str):
        _fail(path, f"{what} key must be a string, got {_show(key)}")
    return key, value


def _is_number(value: object, path: str) -> TypeGuard[float]:
    """Whether ``value`` is a JSON number (booleans are not); NaN and infinities are errors."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if not math.isfinite(value):
        _fail(path, f"numbers must be finite, got {value}")
    return True


def _check_length(length: int) -> None:
    if length > MAX_PATTERN_LENGTH:
        _fail("", f"pattern is {length} characters of JSON; the limit is {MAX_PATTERN_LENGTH}")


def _show(value: object, *, bare: bool = False) -> str:
    """``value`` for an error message: its kind, then its JSON text, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kinds = {bool: "boolean ", int: "number ", float: "number ", str: "string ", list: "list "}
    kind = "" if bare or value is None else kinds.get(type(value), "object ")
    return kind + text


def _fail(path: str, problem: str) -> NoReturn:
    raise InvalidPatternError(f"{path or '(root)'}: {problem}")
