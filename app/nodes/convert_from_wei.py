"""``convert-from-wei``: an integer amount of base units → a decimal amount, exactly.

``wei`` is an integer string (digits with an optional ``-``; no hex) or a JSON
integer. The result has no trailing fractional zeros and no trailing ``.``.
"""
from __future__ import annotations

from ..dialect import Any_
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object
from .units import decimals_field, from_base_units, number_text, string_or_integer


class Payload(PayloadSchema):
    wei = Any_(required=True, allow_none=False, validate=string_or_integer)
    decimals = decimals_field()


def run(data: dict, ctx: NodeContext) -> dict:
    """``{value}``: wei ÷ 10^decimals as a decimal string."""
    try:
        return {"value": from_base_units(number_text(data["wei"]), data["decimals"])}
    except ValueError as error:
        raise NodeError("INVALID_INPUT", f"wei: {error}") from None


NODE = NodeType("convert-from-wei", Payload, run, inline=True,
                result=result_object({"value": {"type": "string"}}))
