"""Helpers for node tests: call a node type's schema and handler without the engine."""
from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from marshmallow import ValidationError

from app.nodes.base import NodeContext, NodeError
from tests.helpers import post_run


def ctx(resolve: Callable[[str], Any] | None = None) -> NodeContext:
    """A context with a far deadline; ``resolve`` answers condition keys."""
    context = NodeContext(run_id="run_unit", node_id="n", deadline=time.monotonic() + 10)
    if resolve is not None:
        context.resolve = resolve
    return context


def call(module: ModuleType, payload: dict, resolve: Callable[[str], Any] | None = None) -> dict:
    """Load ``payload`` with the type's schema, then run the handler."""
    return module.run(module.Payload().load(payload), ctx(resolve))


def schema_errors(module: ModuleType, payload: dict) -> dict:
    """The schema's errors for ``payload`` (it must have some)."""
    with pytest.raises(ValidationError) as caught:
        module.Payload().load(payload)
    return caught.value.messages


def node_error(module: ModuleType, payload: dict,
               resolve: Callable[[str], Any] | None = None) -> NodeError:
    """The ``NodeError`` the handler raises for a schema-valid ``payload``."""
    with pytest.raises(NodeError) as caught:
        call(module, payload, resolve)
    return caught.value


def literal_rejected(client, node: dict, field: str) -> list[str]:
    """POST a run whose node ``n`` is ``node``; assert 400228 at its payload ``field``."""
    body = {"definition": {"nodes": {"root": {"type": "manual", "children": ["n"]}, "n": node}}}
    response = post_run(client, body)
    assert response.status_code == 400, response.json
    assert response.json["code"] == 400228
    where = f"definition.nodes.n.payload.{field}"
    assert where in response.json["errors"], response.json["errors"]
    return response.json["errors"][where]


def failed_with(out: dict, node_id: str, code: str = "INVALID_INPUT") -> str:
    """Assert ``node_id`` failed with ``code`` in an engine response; its message."""
    state = out["executionState"][node_id]
    assert state["status"] == "failure", state
    assert state["error"]["code"] == code, state["error"]
    assert out["status"] == "failure"
    return state["error"]["message"]
