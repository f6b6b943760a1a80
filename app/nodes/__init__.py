"""The registry of node types: type name → ``NodeType``, each declared as ``NODE`` at the
end of its module (see ``base`` for the contract)."""
from __future__ import annotations

from . import (
    code_transform,
    convert_from_wei,
    convert_to_wei,
    delay,
    filter_,
    for_each,
    format_,
    generate_id,
    hello_world,
    http_request,
    if_,
    list_max,
    list_min,
    log,
    manual,
    pluck,
    regex,
    send_webhook,
)
from .base import NodeType

NODE_TYPES: dict[str, NodeType] = {node.name: node for node in (
    manual.NODE,
    log.NODE,
    if_.NODE,
    filter_.NODE,
    pluck.NODE,
    format_.NODE,
    regex.NODE,
    code_transform.NODE,
    delay.NODE,
    http_request.NODE,
    send_webhook.NODE,
    convert_to_wei.NODE,
    convert_from_wei.NODE,
    list_min.NODE,
    list_max.NODE,
    generate_id.NODE,
    hello_world.NODE,
    for_each.NODE,
)}

# Known to B3OS but refused here: a sync run cannot wait for an outside event.
REJECTED_IN_SYNC = {"wait": "'wait' is not supported in a synchronous run."}
