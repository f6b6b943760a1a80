"""``filter``: keep the items of ``array`` for which the condition (SPEC §5) holds.

The condition is ``filter`` (or its alias ``condition``). A left-hand key names
a field of the item: a bare path (``amount``, ``token.symbol``, ``@amount``)
or ``{{@amount}}``; ``{{@}}``, ``@`` or ``""`` is the item itself. A key with
a run expression (``{{root.result.min}}``) reads the run instead, the same for
every item. In the older form ``{"$gt": ["{{@amount}}", 100]}`` the left value
is an item field only when written as ``{{@path}}``; any other value is itself.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, validates_schema

from ..dialect import Arr, presence_rule
from ..expressions import ExpressionError, parse
from . import conditions
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object
from .values import ITEM_HOLE, at_path, parse_path

Accessor = Callable[[Any], Any]


class Payload(PayloadSchema):
    array = Arr(required=True)
    filter = conditions.Condition()
    condition = conditions.Condition()

    @presence_rule
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def one_condition(self, data: dict, original: dict, **kwargs) -> None:
        # The raw keys: a present but ill-typed value is reported by its own field.
        if not isinstance(original, dict):
            return  # not an object: reported as such
        if "filter" in original and "condition" in original:
            raise ValidationError("Give 'filter' or its alias 'condition', not both.",
                                  "condition")
        if "filter" not in original and "condition" not in original:
            raise ValidationError("Missing data for required field "
                                  "(or its alias 'condition').", "filter")


def run(data: dict, ctx: NodeContext) -> dict:
    """``{filtered}``: the items, in order, for which the condition holds."""
    name = "filter" if "filter" in data else "condition"
    condition, array = conditions.usable(data[name]), data["array"]
    tick = conditions.ticks(ctx.check)
    # Every left-hand side is prepared once, so a bad path fails even on an empty array.
    keys: dict[str, Accessor] = {}
    item_values: dict[str, Accessor] = {}
    for is_key, side in conditions.lefts(condition, tick):
        tick(1)
        if is_key:
            keys[side] = _key_accessor(side, ctx)
        elif isinstance(side, str) and (hole := ITEM_HOLE.fullmatch(side.strip())):
            item_values[side] = _path_accessor(hole.group(1))
    lookups: dict = {}  # long $in arrays, hashed once for all items

    def matches(item: Any) -> bool:
        def operand(value: Any) -> Any:
            accessor = item_values.get(value) if isinstance(value, str) else None
            return accessor(item) if accessor else value
        tick(1)
        return conditions.holds(condition, lambda key: keys[key](item), operand, tick, lookups)

    return {"filtered": [item for item in array if matches(item)]}


def _key_accessor(key: str, ctx: NodeContext) -> Accessor:
    """How to read a left-hand key against an item."""
    found = ITEM_HOLE.fullmatch(key.strip())
    if found:
        return _path_accessor(found.group(1))
    try:
        reads_run = bool(parse(key).holes)
    except ExpressionError as error:
        raise NodeError("INVALID_INPUT", f"condition key {key!r}: {error}") from None
    if reads_run:
        value = ctx.resolve(key)
        return lambda item: value
    return _path_accessor(key.strip().removeprefix("@"))


def _path_accessor(text: str) -> Accessor:
    try:
        segments = parse_path(text)
    except ValueError as error:
        raise NodeError("INVALID_INPUT", str(error)) from None
    return lambda item: at_path(item, segments)


NODE = NodeType("filter", Payload, run, condition_fields=("filter", "condition"),
                result=result_object({"filtered": {"type": "array"}}))
