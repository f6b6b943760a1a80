"""The condition DSL of SPEC §5, one implementation for ``if`` and ``filter``.

A condition is an object whose entries must all hold:

- ``"$and": [c, …]`` / ``"$or": [c, …]`` — nested conditions (empty ``$and``
  holds, empty ``$or`` does not);
- ``"<left>": {"$op": right, …}`` — the left key is resolved by the caller
  (an expression for ``if``, an item field for ``filter``); every operator in
  the object must hold;
- ``"$op": [left, right]`` — the older form; ``left`` is a value (already
  resolved like any payload value), which the caller may resolve further.

A value that is absent reads as null. Numbers and numeric strings compare as
exact decimals (``values.number``). ``$eq`` compares a number with a numeric
string as numbers but two strings as strings (``"1.0"`` ≠ ``"1"``), as SPEC
§5 words it; ordering operators coerce every numeric string. Booleans are
never numbers. ``$contains`` needs a string right-hand side for a string left.

The structure is checked (in ``condition_check``, with the rest of what makes a
condition well formed) before anything is evaluated, once, as the payload
loads, by its ``Condition`` field: a handler takes the loaded condition from
``usable`` and evaluates it with ``holds`` (``evaluate`` checks, then
evaluates, a condition that did not come from a load). This module gives the
operators their meaning and is the one the nodes import, so it re-exports the
check's names.

Checking and evaluating pay a ``Tick`` (``ticks(ctx.check)``) for their work,
so the attempt's deadline is checked every ~``CHECK_EVERY`` comparisons however
large the condition or its values (SPEC §3). A caller evaluating one condition
for many items (``filter``) passes one ``lookups`` dict: each long ``$in``
array is then hashed once (``lookup``) rather than searched for every item.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from .base import NodeError
from .condition_check import (
    CHECK_EVERY,
    LOGICAL,
    Condition,
    ConditionError,
    Malformed,
    Tick,
    check,
    idle,
    literal_validator,
    ticks,
)
from .values import is_number, number, present

__all__ = ["CHECK_EVERY", "HASH_FROM", "LOGICAL", "OPERATORS", "Condition", "ConditionError",
           "Lookups", "Malformed", "Resolver", "Tick", "check", "compare", "equal", "evaluate",
           "holds", "lefts", "literal_validator", "lookup", "ticks", "usable"]

Resolver = Callable[[Any], Any]
Lookups = dict[int, Callable[[Any], bool]] | None  # hashed $in arrays by id()

# From this many values on, a right-hand array tested more than once is hashed.
HASH_FROM = 16


def equal(a: Any, b: Any, tick: Tick = idle) -> bool:
    """``$eq``: JSON equality; a number equals a numeric string of the same value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if is_number(a) or is_number(b):
        left, right = number(a), number(b)
        return left is not None and right is not None and left == right
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and _pairs_equal(zip(a, b, strict=True), len(a), tick)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and _pairs_equal(((a[k], b[k]) for k in a), len(a), tick)
    return type(a) is type(b) and a == b


def _pairs_equal(pairs: Iterator[tuple[Any, Any]], count: int, tick: Tick) -> bool:
    """Every pair equal; each chunk of pairs is paid for before it is compared."""
    while count > 0:
        size = min(count, CHECK_EVERY)
        tick(size)
        if not all(equal(x, y, tick) for x, y in islice(pairs, size)):
            return False
        count -= size
    return True


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1 for two numeric values or two strings; None when not comparable."""
    left, right = number(a), number(b)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    return None


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any, Tick], bool]:
    def op(a: Any, b: Any, tick: Tick = idle) -> bool:
        order = compare(a, b)
        return order is not None and test(order)
    return op


def _any_equal(value: Any, values: list, tick: Tick) -> bool:
    """``value`` equals one of ``values`` (a linear search, paid for by chunks)."""
    if len(values) <= CHECK_EVERY:  # the usual case, without slicing
        tick(len(values))
        return any(equal(value, item, tick) for item in values)
    for start in range(0, len(values), CHECK_EVERY):
        chunk = values[start:start + CHECK_EVERY]
        tick(len(chunk))
        if any(equal(value, item, tick) for item in chunk):
            return True
    return False


def _in(a: Any, b: list, tick: Tick = idle) -> bool:
    return _any_equal(a, b, tick)


def _contains(a: Any, b: Any, tick: Tick = idle) -> bool:
    if isinstance(a, str):
        return isinstance(b, str) and b in a
    return isinstance(a, list) and _any_equal(b, a, tick)


def lookup(values: list, tick: Tick = idle) -> Callable[[Any], bool]:
    """``_in(a, values)`` by hashing, for one array tested against many left values.

    ``equal`` sorts values into kinds that only ever match each other: booleans
    and null match themselves; a number matches a number or a numeric string of
    the same exact value; a string matches the same string, or a number of its
    value; arrays and objects match only arrays and objects (compared one by
    one, as in ``_in``). Equal ``Decimal``s hash alike (``1e21``, ``"1.0e21"``).
    """
    flags, strings, numbers, numeric_strings, containers = set(), set(), set(), set(), []
    for start in range(0, len(values), CHECK_EVERY):
        chunk = values[start:start + CHECK_EVERY]
        tick(len(chunk))
        for value in chunk:
            if isinstance(value, bool) or value is None:
                flags.add(value)  # only ever looked up with a boolean or null
            elif is_number(value):
                numbers.add(number(value))  # None for NaN or infinity: matches nothing
            elif isinstance(value, str):
                strings.add(value)
                numeric_strings.add(number(value))
            else:
                containers.append(value)
    numbers.discard(None)
    numeric_strings.discard(None)

    def member(a: Any) -> bool:
        if isinstance(a, bool) or a is None:
            return a in flags
        if is_number(a):
            value = number(a)
            return value is not None and (value in numbers or value in numeric_strings)
        if isinstance(a, str):
            return a in strings or (bool(numbers) and number(a) in numbers)
        return _any_equal(a, containers, tick)
    return member


# Each operator takes the left value, the right-hand side and the evaluation's Tick
# (paid by those that may walk large values); the names are condition_check's
# OPERATOR_NAMES, in its order (a test keeps the two alike).
OPERATORS: dict[str, Callable[[Any, Any, Tick], bool]] = {
    "$eq": equal,
    "$ne": lambda a, b, tick: not equal(a, b, tick),
    "$gt": _ordered(lambda order: order > 0),
    "$gte": _ordered(lambda order: order >= 0),
    "$lt": _ordered(lambda order: order < 0),
    "$lte": _ordered(lambda order: order <= 0),
    "$in": _in,
    "$nin": lambda a, b, tick: not _in(a, b, tick),
    "$notIn": lambda a, b, tick: not _in(a, b, tick),
    "$contains": _contains,
    "$notContains": lambda a, b, tick: not _contains(a, b, tick),
    "$startsWith": lambda a, b, tick: (isinstance(a, str) and isinstance(b, str)
                                       and a.startswith(b)),
    "$endsWith": lambda a, b, tick: isinstance(a, str) and isinstance(b, str) and a.endswith(b),
    "$exists": lambda a, b, tick: (a is not None) is b,
    "$notExists": lambda a, b, tick: (a is None) is b,
}
_MEMBERSHIP = {"$in": True, "$nin": False, "$notIn": False}


def lefts(condition: dict, tick: Tick = idle) -> list[tuple[bool, Any]]:
    """Every left-hand side of a checked condition: ``(is_key, key or old-form value)``."""
    found: list[tuple[bool, Any]] = []
    for key, value in condition.items():
        if key in LOGICAL:
            tick(len(value))  # a few hundred ns per element: checked often enough
            for element in value:
                found.extend(lefts(element, tick))
        elif key in OPERATORS:
            found.append((False, value[0]))
        else:
            found.append((True, key))
    return found


def holds(condition: dict, left: Resolver, operand: Resolver = lambda value: value,
          tick: Tick = idle, lookups: Lookups = None) -> bool:
    """Evaluate a checked condition; ``left`` resolves keys, ``operand`` old-form lefts.

    The parts of ``$and``/``$or`` pay ``tick`` before they are evaluated, and
    comparisons of large values pay as they walk them, so the caller's check
    runs every ~1000 units of work (a caller evaluating it for many items pays
    for each item). ``lookups`` (one dict for many evaluations of one condition, as in
    ``filter``) keeps a hashed ``lookup`` of each long ``$in`` array, built on
    first use; an array tested once is searched instead, which costs less.
    """
    for key, value in condition.items():
        if key in LOGICAL:
            ok = _logical(value, key == "$and", left, operand, tick, lookups)
        elif key in OPERATORS:
            ok = _apply(key, present(operand(value[0])), value[1], tick, lookups)
        else:
            actual = present(left(key))
            ok = all(_apply(op, actual, right, tick, lookups) for op, right in value.items())
        if not ok:
            return False
    return True


def _logical(parts: list, every: bool, left: Resolver, operand: Resolver, tick: Tick,
             lookups: Lookups) -> bool:
    """``all`` (``every``) or ``any`` of the conditions in ``parts``, paid for by chunks."""
    for i, part in enumerate(parts):
        if not i % CHECK_EVERY:
            tick(min(CHECK_EVERY, len(parts) - i))
        if holds(part, left, operand, tick, lookups) is not every:
            return not every
    return every


def _apply(op: str, a: Any, b: Any, tick: Tick, lookups: Lookups) -> bool:
    if op in _MEMBERSHIP and lookups is not None and len(b) >= HASH_FROM:
        found = lookups.get(id(b))  # the condition holds b: its id stays its own
        if found is None:
            found = lookups[id(b)] = lookup(b, tick)
        return found(a) is _MEMBERSHIP[op]
    return OPERATORS[op](a, b, tick)


def usable(condition: dict) -> dict:
    """A condition as its ``Condition`` field loaded it, ready for ``holds``;
    ``INVALID_INPUT`` for a ``Malformed`` one."""
    if isinstance(condition, Malformed):
        raise NodeError("INVALID_INPUT", condition.problem)
    return condition


def evaluate(condition: Any, left: Resolver, operand: Resolver = lambda value: value,
             where: str = "condition", tick: Tick = idle) -> bool:
    """Check then evaluate a condition that was not loaded by a ``Condition`` field; a
    malformed condition is ``INVALID_INPUT``."""
    try:
        check(condition, where, tick=tick)
    except ConditionError as error:
        raise NodeError("INVALID_INPUT", str(error)) from None
    return holds(condition, left, operand, tick)
