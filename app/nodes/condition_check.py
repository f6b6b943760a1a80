"""The structure of a condition (SPEC §5), checked before anything is evaluated.

The forms are described in ``conditions``, which gives each operator named
here its meaning. ``check`` raises a ``ConditionError`` naming where the
condition is malformed: an unknown operator, a shape that is not one of the
forms, a non-array ``$in``/``$and`` or a non-boolean ``$exists``.
``literal_validator`` runs the same check on a payload's condition at
validation, leaving the parts that hold an expression until they are resolved.

Checking pays a ``Tick`` for its work, as evaluating does, so a large condition
cannot keep an attempt past its deadline (SPEC §3).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError

from ..expressions import is_template
from ..ticks import CHECK_EVERY, Tick, idle, ticks

__all__ = ["CHECK_EVERY", "LOGICAL", "OPERATOR_NAMES", "ConditionError", "Tick", "check",
           "idle", "literal_validator", "ticks"]

LOGICAL = ("$and", "$or")
# In the order an error message lists them; ``conditions.OPERATORS`` implements each.
OPERATOR_NAMES = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$notIn",
                  "$contains", "$notContains", "$startsWith", "$endsWith", "$exists",
                  "$notExists")
_KNOWN = frozenset(OPERATOR_NAMES)
_NEEDS_ARRAY = {"$in", "$nin", "$notIn"}
_NEEDS_BOOL = {"$exists", "$notExists"}


class ConditionError(ValueError):
    """A malformed condition; the message says where and why."""


def _never(value: Any) -> bool:
    return False


def _holds_expression(value: Any) -> bool:
    return isinstance(value, str) and is_template(value)


def check(condition: Any, where: str = "condition", deferred: Callable[[Any], bool] = _never,
          tick: Tick = idle) -> None:
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
                if not i % CHECK_EVERY:
                    tick(min(CHECK_EVERY, len(value) - i))
                check(element, f"{here}[{i}]", deferred, tick)
        elif key in _KNOWN:
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
        if op not in _KNOWN:
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
    known = ", ".join([*LOGICAL, *OPERATOR_NAMES])
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
