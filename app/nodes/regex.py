"""``regex``: placeholder until implemented (see the issue on node types)."""
from __future__ import annotations

from .base import NodeContext, NodeError, PayloadSchema


class Payload(PayloadSchema):
    pass


def run(data: dict, ctx: NodeContext) -> dict:
    raise NodeError("INTERNAL", "Node type 'regex' is not implemented yet.")
