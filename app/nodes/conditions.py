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

The structure is checked (``check``) before anything is evaluated: an unknown
operator, a shape that is not one of the above, a non-array ``$in``/``$and``
or a non-boolean ``$exists`` is a ``ConditionError`` naming where it is.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError

from ..expressions import is_template
from .base import NodeError
from .values import is_number, number, present

Resolver = Callable[[Any], Any]


class ConditionError(ValueError):
    """A malformed condition; the message says where and why."""


def equal(a: Any, b: Any) -> bool:
    """``$eq``: JSON equality; a number equals a numeric string of the same value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if is_number(a) or is_number(b):
        left, right = number(a), number(b)
        return left is not None and right is not None and left == right
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1 for two numeric values or two strings; None when not comparable."""
    left, right = number(a), number(b)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    return None


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def op(a: Any, b: Any) -> bool:
        order = compare(a, b)
        return order is not None and test(order)
    return op


def _in(a: Any, b: list) -> bool:
    return any(equal(a, item) for item in b)


def _contains(a: Any, b: Any) -> bool:
    if isinstance(a, str):
        return isinstance(b, str) and b in a
    return isinstance(a, list) and any(equal(item, b) for item in a)


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": equal,
    "$ne": lambda a, b: not equal(a, b),
    "$gt": _ordered(lambda order: order > 0),
    "$gte": _ordered(lambda order: order >= 0),
    "$lt": _ordered(lambda order: order < 0),
    "$lte": _ordered(lambda order: order <= 0),
    "$in": _in,
    "$nin": lambda a, b: not _in(a, b),
    "$notIn": lambda a, b: not _in(a, b),
    "$contains": _contains,
    "$notContains": lambda a, b: not _contains(a, b),
    "$startsWith": lambda a, b: isinstance(a, str) and isinstance(b, str) and a.startswith(b),
    "$endsWith": lambda a, b: isinstance(a, str) and isinstance(b, str) and a.endswith(b),
    "$exists": lambda a, b: (a is not None) is b,
    "$notExists": lambda a, b: (a is None) is b,
}
LOGICAL = ("$and", "$or")
_NEEDS_ARRAY = {"$in", "$nin", "$notIn"}
_NEEDS_BOOL = {"$exists", "$notExists"}


def _never(value: Any) -> bool:
    return False


def _holds_expression(value: Any) -> bool:
    return isinstance(value, str) and is_template(value)


def check(condition: Any, where: str = "condition", deferred: Callable[[Any], bool] = _never
          ) -> None:
    """Raise ``ConditionError`` at the first malformed part; ``deferred`` values are skipped."""
    if deferred(condition):
        return
    if not isinstance(condition, dict):
        raise ConditionError(f"{where}: a condition must be an object.")
    if not condition:
        raise ConditionError(f'{where}: an empty condition; write {{"$and": []}} for '
                             "one that always holds.")
    for key, value in condition.items():
        here = f"{where}.{key}"
        if deferred(value):
            continue
        if key in LOGICAL:
            if not isinstance(value, list):
                raise ConditionError(f"{here}: must be an array of conditions.")
            for i, element in enumerate(value):
                check(element, f"{here}[{i}]", deferred)
        elif key in OPERATORS:
            if not isinstance(value, list) or len(value) != 2:
                raise ConditionError(f'{here}: the form {{"{key}": [left, right]}} needs '
                                     "an array of exactly two values.")
            _check_operand(key, value[1], f"{here}[1]", deferred)
        elif key.startswith("$"):
            raise ConditionError(_unknown(key, here))
        else:
            _check_operators(value, here, deferred)


def _check_operators(ops: Any, where: str, deferred: Callable[[Any], bool]) -> None:
    if not isinstance(ops, dict) or not ops:
        raise ConditionError(f'{where}: expected an object of operators, such as '
                             '{"$eq": value}.')
    for op, right in ops.items():
        if op not in OPERATORS:
            raise ConditionError(_unknown(op, f"{where}.{op}"))
        _check_operand(op, right, f"{where}.{op}", deferred)


def _check_operand(op: str, right: Any, where: str, deferred: Callable[[Any], bool]) -> None:
    if deferred(right):
        return
    if op in _NEEDS_ARRAY and not isinstance(right, list):
        raise ConditionError(f"{where}: must be an array.")
    if op in _NEEDS_BOOL and not isinstance(right, bool):
        raise ConditionError(f"{where}: must be true or false.")


def _unknown(op: str, where: str) -> str:
    known = ", ".join([*LOGICAL, *OPERATORS])
    return (f"{where}: unknown operator {op!r}. Known: {known}. "
            "A left-hand expression is written in braces, as in {{node.result.x}}.")


def literal_validator(name: str) -> Callable[[Any], None]:
    """A marshmallow validator for payload key ``name``: the structure, expressions skipped."""
    def validate(condition: Any) -> None:
        try:
            check(condition, name, _holds_expression)
        except ConditionError as error:
            raise ValidationError(str(error)) from None
    return validate


def lefts(condition: dict) -> list[tuple[bool, Any]]:
    """Every left-hand side of a checked condition: ``(is_key, key or old-form value)``."""
    found: list[tuple[bool, Any]] = []
    for key, value in condition.items():
        if key in LOGICAL:
            for element in value:
                found.extend(lefts(element))
        elif key in OPERATORS:
            found.append((False, value[0]))
        else:
            found.append((True, key))
    return found


def holds(condition: dict, left: Resolver, operand: Resolver = lambda value: value) -> bool:
    """Evaluate a checked condition; ``left`` resolves keys, ``operand`` old-form lefts."""
    for key, value in condition.items():
        if key == "$and":
            ok = all(holds(c, left, operand) for c in value)
        elif key == "$or":
            ok = any(holds(c, left, operand) for c in value)
        elif key in OPERATORS:
            ok = OPERATORS[key](present(operand(value[0])), value[1])
        else:
            actual = present(left(key))
            ok = all(OPERATORS[op](actual, right) for op, right in value.items())
        if not ok:
            return False
    return True


def evaluate(condition: Any, left: Resolver, operand: Resolver = lambda value: value,
             where: str = "condition") -> bool:
    """Check then evaluate; a malformed condition is ``INVALID_INPUT``."""
    try:
        check(condition, where)
    except ConditionError as error:
        raise NodeError("INVALID_INPUT", str(error)) from None
    return holds(condition, left, operand)
