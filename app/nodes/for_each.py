"""``for-each``: run the loop's body once per item of ``array`` (SPEC §11).

The engine runs a loop itself: its body is a graph of its own, entered once per
item, whose node instances the scheduler runs beside every other node
(app/engine.py, app/loops.py). This module declares the type: its payload, its
result, and what a loop may hold.
"""
from __future__ import annotations

from marshmallow import ValidationError, validate

from ..dialect import Arr, Int, Str
from .base import NodeContext, NodeType, PayloadSchema, result_object

MAX_ITEMS = 100
MAX_CONCURRENCY = 10


def _at_most_max_items(array: list) -> None:
    if len(array) > MAX_ITEMS:
        raise ValidationError(f"At most {MAX_ITEMS} items; this array has {len(array)}.")


class Payload(PayloadSchema):
    array = Arr(required=True, validate=_at_most_max_items, metadata={
        "maxItems": MAX_ITEMS,
        "description": "the items: the loop's body (the node's loopBody entries and the "
                       "nodes they lead to) runs once per item"})
    concurrency = Int(load_default=1, validate=validate.Range(1, MAX_CONCURRENCY))
    onItemError = Str(load_default="stop", validate=validate.OneOf(("stop", "continue")))


def run(data: dict, ctx: NodeContext) -> dict:
    """Not called: the engine runs loops (see the module docstring)."""
    raise NotImplementedError("a for-each node is run by the engine")


ITERATION = result_object({
    "index": {"type": "integer"},
    "status": {"type": "string", "enum": ["success", "failure", "skipped"]},
    "results": {"type": "object", "description": "body node id → its result, or null"},
})

NODE = NodeType("for-each", Payload, run, inline=True, result=result_object({
    "iterations": {"type": "array", "items": ITERATION},
    "iterationCount": {"type": "integer"},
    "lastAdvancedIteration": {"type": "integer",
                              "description": "the highest index that started; -1 for none"},
    "status": {"type": "string", "enum": ["completed", "stopped"]},
}))
