"""``log``: write a message to the service log and return it.

A message that is not a string (a number from a lone expression, say) is
written as text by the expression language's rules rather than refused.
"""
from __future__ import annotations

from .. import logconfig
from ..dialect import Any_
from ..jstext import iso_now, to_text
from .base import NodeContext, NodeType, PayloadSchema, result_object


class Payload(PayloadSchema):
    message = Any_(required=True)


def run(data: dict, ctx: NodeContext) -> dict:
    """Log ``message`` with the run and node ids."""
    message = data["message"]
    if message.__class__ is not str:  # a string, as a rule: as it is
        message = to_text(message, ctx.check)
    logconfig.info(ctx.logger, message, {"runId": ctx.run_id, "nodeId": ctx.node_id})
    return {"message": message, "loggedAt": iso_now()}


NODE = NodeType("log", Payload, run, inline=True, result=result_object(
    {"message": {"type": "string"}, "loggedAt": {"type": "string", "format": "date-time"}}))
