"""``send-webhook``: POST a body until the receiver answers 2xx (SPEC §5).

The node's own ``maxRetries`` happen inside one attempt (1 CU): up to
``maxRetries + 1`` POSTs, with a short exponential wait between them that
never runs past the attempt's time limit. Every POST carries the same
``X-Webhook-Delivery-Id`` (derived from the run and node ids, so a retry of
the whole node by the engine carries it too) for the receiver to drop
duplicates. Redirects are not followed: a 3xx is a failed POST, as in the
common webhook services, so a receiver cannot bounce the body elsewhere.
"""
from __future__ import annotations

import uuid

from marshmallow import validate

from .. import outbound
from ..dialect import Any_, Int, Obj, Str
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object
from .http_request import check_headers, encode_body, request_headers

MAX_RETRIES = 10
FIRST_WAIT_S, MAX_WAIT_S = 0.2, 2.0
POST_TIMEOUT_S = 10.0  # one slow receiver must not use the whole attempt on one POST
DELIVERY_HEADER = "X-Webhook-Delivery-Id"


class Payload(PayloadSchema):
    url = Str(required=True)
    headers = Obj(load_default=dict, validate=check_headers)
    body = Any_(load_default=None)
    maxRetries = Int(load_default=3, validate=validate.Range(0, MAX_RETRIES))


def run(data: dict, ctx: NodeContext) -> dict:
    """POST until a 2xx; DELIVERY_FAILED after the last POST."""
    url = data["url"]
    host = outbound.parse_url(url).host  # INVALID_INPUT before any POST
    delivery_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ctx.run_id}/{ctx.node_id}"))
    headers = {name: value for name, value in request_headers(data["headers"], ctx.check).items()
               if name.lower() != DELIVERY_HEADER.lower()}  # ours must match the result
    headers[DELIVERY_HEADER] = delivery_id
    body = encode_body(data["body"], headers)
    posts, last = data["maxRetries"] + 1, "no POST was made"
    for number in range(1, posts + 1):
        if number > 1 and not _wait(number - 1, ctx):
            raise _failed(number - 1, last)
        ctx.check()  # no POST starts once the attempt has ended
        try:
            response = outbound.request(
                "POST", url, headers, body, timeout=min(POST_TIMEOUT_S, ctx.time_left()),
                follow_redirects=False, allow_list=ctx.settings.get("OUTBOUND_ALLOW", []),
                cancelled=ctx.cancelled, read_body=False)
        except NodeError as error:
            if error.code in ("BLOCKED_DESTINATION", "INVALID_INPUT") or ctx.cancelled.is_set():
                raise
            last = f"{error.code}: {error.message}"
            continue
        ctx.logger.info("webhook POST", extra={
            "runId": ctx.run_id, "nodeId": ctx.node_id, "host": host, "post": number,
            "status": response.status})
        if 200 <= response.status < 300:
            return {"deliveryId": delivery_id, "status": "delivered", "url": url,
                    "method": "POST", "attempts": number, "responseStatus": response.status}
        last = f"HTTP {response.status} {response.reason}".strip()
    raise _failed(posts, last)


def _wait(retry: int, ctx: NodeContext) -> bool:
    """Wait before retry number ``retry``; False when no time is left to POST after it."""
    seconds = min(FIRST_WAIT_S * 2 ** (retry - 1), MAX_WAIT_S)
    if seconds >= ctx.time_left():
        return False
    if ctx.cancelled.wait(seconds):
        raise NodeError("TIMEOUT", "The attempt exceeded its time limit.", True)
    return True


def _failed(posts: int, last: str) -> NodeError:
    plural = "POST" if posts == 1 else "POSTs"
    return NodeError("DELIVERY_FAILED",
                     f"Not delivered after {posts} {plural}; last: {last.rstrip('.')}.", True)


NODE = NodeType("send-webhook", Payload, run, result=result_object({
    "deliveryId": {"type": "string"}, "status": {"type": "string", "enum": ["delivered"]},
    "url": {"type": "string"}, "method": {"type": "string", "enum": ["POST"]},
    "attempts": {"type": "integer"}, "responseStatus": {"type": "integer"}}))
