"""``hello-world``: a greeting, for trying the service out."""
from __future__ import annotations

from ..dialect import Str
from ..jstext import iso_now
from .base import NodeContext, NodeType, PayloadSchema, result_object


class Payload(PayloadSchema):
    name = Str(load_default="World")


def run(data: dict, ctx: NodeContext) -> dict:
    """``{message: "Hello, <name>!", timestamp}``."""
    return {"message": f"Hello, {data['name']}!", "timestamp": iso_now()}


NODE = NodeType("hello-world", Payload, run, inline=True, result=result_object(
    {"message": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"}}))
