"""``list-max``: the largest value of ``array`` (or of each item's ``field``).

See ``listcompare`` for what compares and how.
"""
from __future__ import annotations

from .base import NodeContext, NodeType, result_object, small_array
from .listcompare import Payload, pick

__all__ = ["NODE", "Payload", "run"]


def run(data: dict, ctx: NodeContext) -> dict:
    """``{max, index, item}``."""
    value, index, item = pick(data, largest=True, check=ctx.check)
    return {"max": value, "index": index, "item": item}


NODE = NodeType("list-max", Payload, run, inline_when=small_array,
                result=result_object({"max": {}, "index": {"type": "integer"}, "item": {}}))
