"""The structure of a condition (SPEC §5), checked before anything is evaluated.

The forms are described in ``conditions``, which gives each operator named
here its meaning. ``check`` raises a ``ConditionError`` naming where the
condition is malformed: an unknown operator, a shape that is not one of the
forms, a non-array ``$in``/``$and`` or a non-boolean ``$exists``.

A payload's condition is a ``Condition`` field, checked once per phase as its
payload loads: at validation on the condition as written, where a string
holding ``{{`` in a place that needs structure is an expression and is left
for later; before each attempt on the resolved condition, where such a string
is text (an item field, a ``{{`` that is not an expression, or what an
expression resolved to). That last kind of problem is not the load's: it is
kept on the loaded condition (``Malformed``) and reported when the handler
evaluates it (``conditions.usable``), after the engine has resolved the
condition keys. ``literal_validator`` is the validation-time check alone.

``check`` pays a ``Tick`` for its work, as evaluating does, so a large condition
cannot keep an attempt past its deadline (SPEC §3); a load walks it as it walks
the rest of the payload, within the input's size limit.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError

from ..dialect import Obj
from ..expressions import is_template
from ..ticks import CHECK_EVERY, Tick, idle, ticks

__all__ = ["CHECK_EVERY", "LOGICAL", "OPERATOR_NAMES", "Condition", "ConditionError",
           "Malformed", "Tick", "check", "idle", "literal_validator", "ticks"]

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


# Told of each malformed part, with the value that makes it so (None when no value could
# excuse it): raises, or returns to go on with the rest of the condition.
Found = Callable[[str, Any], None]


def _holds_expression(value: Any) -> bool:
    return isinstance(value, str) and is_template(value)


def _fail(message: str, value: Any) -> None:
    raise ConditionError(message)


def check(condition: Any, where: str = "condition", tick: Tick = idle) -> None:
    """Raise ``ConditionError`` at the first malformed part."""
    _walk(condition, where, _fail, tick)


def _walk(condition: Any, where: str, found: Found, tick: Tick) -> None:
    """Tell ``found`` of each malformed part, in order, skipping each one it returns from."""
    if not isinstance(condition, dict):
        found(f"{where}: a condition must be an object.", condition)
        return
    if not condition:
        found(f'{where}: an empty condition; write {{"$and": []}} for '
              "one that always holds.", condition)
        return
    for key, value in condition.items():
        here = f"{where}.{key}"
        if key in LOGICAL:
            if not isinstance(value, list):
                found(f"{here}: must be an array of conditions.", value)
                continue
            for i, element in enumerate(value):
                if not i % CHECK_EVERY:
                    tick(min(CHECK_EVERY, len(value) - i))
                _walk(element, f"{here}[{i}]", found, tick)
        elif key in _KNOWN:
            if not isinstance(value, list) or len(value) != 2:
                found(f'{here}: the form {{"{key}": [left, right]}} needs '
                      "an array of exactly two values.", value)
                continue
            _check_operand(key, value[1], f"{here}[1]", found)
        elif key.startswith("$"):
            found(_unknown(key, here), value)
        else:
            _check_operators(value, here, found)


def _check_operators(ops: Any, where: str, found: Found) -> None:
    if not isinstance(ops, dict) or not ops:
        found(f'{where}: expected an object of operators, such as {{"$eq": value}}.', ops)
        return
    for op, right in ops.items():
        if op not in _KNOWN:
            found(_unknown(op, f"{where}.{op}"), None)
            continue
        _check_operand(op, right, f"{where}.{op}", found)


def _check_operand(op: str, right: Any, where: str, found: Found) -> None:
    if op in _NEEDS_ARRAY and not isinstance(right, list):
        found(f"{where}: must be an array.", right)
    elif op in _NEEDS_BOOL and not isinstance(right, bool):
        found(f"{where}: must be true or false.", right)


def _unknown(op: str, where: str) -> str:
    known = ", ".join([*LOGICAL, *OPERATOR_NAMES])
    return (f"{where}: unknown operator {op!r}. Known: {known}. "
            "A left-hand expression is written in braces, as in {{node.result.x}}.")


def literal_validator(name: str) -> Callable[[Any], None]:
    """A marshmallow validator for payload key ``name``: the structure, expressions skipped."""
    def validate(condition: Any) -> None:
        _walk(condition, name, _literal, idle)
    return validate


def _literal(message: str, value: Any) -> None:
    if not _holds_expression(value):
        raise ValidationError(message)


class Malformed(dict):
    """A loaded condition, malformed where a string holding ``{{`` stands in for
    structure; ``problem`` says where (the first such place)."""

    def __init__(self, condition: dict, problem: str):
        super().__init__(condition)
        self.problem = problem


class Condition(Obj):
    """A payload key holding a condition: an object, well formed but for strings holding
    ``{{`` (see the module docstring), loaded as it is or as a ``Malformed`` copy."""

    def _deserialize(self, value, attr, data, **kwargs):
        condition = super()._deserialize(value, attr, data, **kwargs)
        text: list[str] = []  # the first problem at a string holding {{

        def found(message: str, part: Any) -> None:
            _literal(message, part)
            if not text:
                text.append(message)
        _walk(condition, attr, found, idle)
        return Malformed(condition, text[0]) if text else condition
