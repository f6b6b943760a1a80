"""``if``: evaluate ``condition`` (SPEC §5) and choose the ``then`` or ``else`` children.

Left-hand keys are resolved as whole-value run expressions
(``{{root.result.price}}`` keeps its type); a key without ``{{ }}`` is the
literal string as written.
"""
from __future__ import annotations

from typing import Any

from ..expressions import ExpressionError
from . import conditions
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object


class Payload(PayloadSchema):
    condition = conditions.Condition(required=True)


def run(data: dict, ctx: NodeContext) -> dict:
    """``{branch: "then"}`` when the condition holds, else ``{branch: "else"}``."""
    condition = conditions.usable(data["condition"])

    def left(key: str) -> Any:
        try:
            return ctx.resolve(key)
        except ExpressionError as error:  # keys that came from an expression are unchecked
            raise NodeError("INVALID_INPUT", f"condition key {key!r}: {error}") from None

    tick = conditions.ticks(ctx.check)  # runs inline: bounded by its own checks alone
    holds = conditions.holds(condition, left, tick=tick)
    return {"branch": "then" if holds else "else"}


NODE = NodeType("if", Payload, run, inline=True, condition_fields=("condition",),
                result=result_object({"branch": {"type": "string", "enum": ["then", "else"]}}))
