"""``list-min``: the smallest value of ``array`` (or of each item's ``field``).

See ``listcompare`` for what compares and how.
"""
from __future__ import annotations

from .base import NodeContext, NodeType, result_object, small_array
from .listcompare import Payload, pick

__all__ = ["NODE", "Payload", "run"]


def run(data: dict, ctx: NodeContext) -> dict:
    """``{min, index, item}``."""
    value, index, item = pick(data, largest=False, check=ctx.check)
    return {"min": value, "index": index, "item": item}


NODE = NodeType("list-min", Payload, run, inline_when=small_array,
                result=result_object({"min": {}, "index": {"type": "integer"}, "item": {}}))
