"""``convert-to-wei``: a decimal amount → an integer amount of base units, exactly.

``value`` is a plain decimal string or a JSON number (see ``units``); negative
amounts are allowed. More significant fractional digits than ``decimals`` is
``INVALID_INPUT``: nothing is rounded.
"""
from __future__ import annotations

from ..dialect import Any_
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object
from .units import decimals_field, number_text, string_or_number, to_base_units


class Payload(PayloadSchema):
    value = Any_(required=True, allow_none=False, validate=string_or_number)
    decimals = decimals_field()


def run(data: dict, ctx: NodeContext) -> dict:
    """``{wei}``: the amount × 10^decimals as an integer string."""
    try:
        return {"wei": to_base_units(number_text(data["value"]), data["decimals"])}
    except ValueError as error:
        raise NodeError("INVALID_INPUT", f"value: {error}") from None


NODE = NodeType("convert-to-wei", Payload, run, inline=True,
                result=result_object({"wei": {"type": "string"}}))
