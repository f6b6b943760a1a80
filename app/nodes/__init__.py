"""The registry of node types: type name → module (see ``base`` for the contract)."""
from __future__ import annotations

from types import ModuleType

from . import (
    code_transform,
    convert_from_wei,
    convert_to_wei,
    delay,
    filter_,
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

NODE_TYPES: dict[str, ModuleType] = {
    "manual": manual,
    "log": log,
    "if": if_,
    "filter": filter_,
    "pluck": pluck,
    "format": format_,
    "regex": regex,
    "code-transform": code_transform,
    "delay": delay,
    "http-request": http_request,
    "send-webhook": send_webhook,
    "convert-to-wei": convert_to_wei,
    "convert-from-wei": convert_from_wei,
    "list-min": list_min,
    "list-max": list_max,
    "generate-id": generate_id,
    "hello-world": hello_world,
}

# Known to B3OS but refused here: a sync run cannot wait for an outside event.
REJECTED_IN_SYNC = {"wait": "'wait' is not supported in a synchronous run."}
