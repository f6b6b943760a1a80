"""Helpers for tests: build definitions and run them through the public surfaces."""
from __future__ import annotations

from typing import Any

from app.engine import Run
from app.validation import Limits, check_request

DEV_AUTH = {"Authorization": "Bearer test-token"}


def definition(*edges: str, **nodes: dict) -> dict:
    """``definition(root=..., a={...})``: nodes by id; root defaults to a manual root.

    ``edges`` are ``"parent>child"`` strings added to the parents' children.
    """
    all_nodes = {"root": {"type": "manual"}}
    all_nodes.update({k: dict(v) for k, v in nodes.items()})
    for edge in edges:
        parent, child = edge.split(">")
        all_nodes[parent].setdefault("children", []).append(child)
    return {"nodes": all_nodes}


def run_engine(body: dict, run_id: str = "run_test", deadline_ms: int = 60_000,
               settings: dict | None = None) -> dict:
    """Check and run a request body through the engine's entry point."""
    request = check_request(body, Limits(run_deadline_ms=deadline_ms))
    return Run(request, run_id, settings=settings, deadline_ms=deadline_ms).execute()


def run_nodes(*edges: str, payload: dict | None = None, **nodes: Any) -> dict:
    """Shortcut: ``run_nodes("root>a", a={"type": "log", ...})`` → response body."""
    body = {"definition": definition(*edges, **nodes)}
    if payload is not None:
        body["payload"] = payload
    return run_engine(body)


def post_run(client, body: dict, **headers: str):
    """POST a run request through the HTTP API with the test token."""
    return client.post("/v1/runs/sync", json=body, headers={**DEV_AUTH, **headers})


ANY = "…"


def matches(expected: Any, actual: Any) -> bool:
    """Whether ``actual`` has what ``expected`` shows: "…" matches any value, an object
    matches when it has at least the keys shown (with matching values), a list item by item."""
    if expected == ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual
