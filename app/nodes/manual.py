"""``manual``: the root node. Its result is the request payload plus ``triggeredAt``.

The engine builds the root's result itself (it is the trigger, not an
attempt); this module exists so the type is listed and validated like any other.
"""
from __future__ import annotations

from .base import NodeContext, NodeType, PayloadSchema, result_object


class Payload(PayloadSchema):
    pass


def run(data: dict, ctx: NodeContext) -> dict:
    """Not called by the engine; see the module docstring."""
    raise NotImplementedError("the root node is run by the engine")


NODE = NodeType("manual", Payload, run, inline=True, cu_per_attempt=0, result=result_object(
    {"triggeredAt": {"type": "string", "format": "date-time"}}, more=True))
