"""``delay``: wait ``delayMs`` milliseconds, then succeed.

The wait is on ``ctx.cancelled``, never ``time.sleep``: the engine sets it when
the attempt's limit or the run deadline passes, so a delay that is cut short
ends at once instead of sleeping on after the response has gone.
"""
from __future__ import annotations

from marshmallow.validate import Range

from ..dialect import Int
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object

MAX_DELAY_MS = 60_000
# The engine decides at the limit itself and then sets ``cancelled``; our own
# timer waits a little longer so it never races that decision (a handler
# outcome landing just after the run deadline turned RUN_TIMEOUT into
# NODE_FAILED). It only fires when nobody cancels, as in a direct call.
GRACE_SECONDS = 0.05


class Payload(PayloadSchema):
    delayMs = Int(required=True, validate=Range(min=0, max=MAX_DELAY_MS))


def run(data: dict, ctx: NodeContext) -> dict:
    """Wait ``delayMs``; fail with ``TIMEOUT`` when the attempt's limit comes first."""
    delay_ms = data["delayMs"]
    left = ctx.time_left()
    if ctx.cancelled.wait(min(delay_ms / 1000, left + GRACE_SECONDS)):
        raise NodeError("TIMEOUT", "The delay was stopped by its time limit.", retryable=True)
    if delay_ms / 1000 > left:
        raise NodeError("TIMEOUT", f"The delay of {delay_ms} ms exceeded the attempt's time "
                        f"limit ({round(left * 1000)} ms were left).", retryable=True)
    return {"status": "completed", "delayedMs": delay_ms}


NODE = NodeType("delay", Payload, run, result=result_object(
    {"status": {"type": "string", "enum": ["completed"]}, "delayedMs": {"type": "integer"}}))
