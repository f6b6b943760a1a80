"""A node's run state and the small pure rules over it (SPEC §1, §3)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .expressions import MISSING
from .nodes.base import iso


@dataclass
class NodeState:
    status: str = "pending"  # pending → running → success | failure; or skipped
    input: Any = MISSING
    result: Any = None
    error: dict | None = None
    reason: str | None = None
    started: float | None = None  # epoch seconds: first attempt's start
    finished: float | None = None  # epoch seconds: last attempt's end
    attempts: int = 0
    attempt_started: float = 0.0  # monotonic: this attempt's start

    def begin_attempt(self, epoch: float, monotonic: float) -> None:
        self.attempts += 1
        self.status = "running"
        self.attempt_started = monotonic
        if self.started is None:
            self.started = epoch

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason

    def view(self, payload: dict) -> dict:
        """What ``{{node.…}}`` expressions see of this node."""
        return {key: self.field(key, payload) for key in VIEW_FIELDS}

    def field(self, key: str, payload: dict) -> Any:
        """``view(payload)[key]`` without building the view; ``MISSING`` for other keys."""
        if key == "result":
            return self.result
        if key == "input":
            return None if self.input is MISSING else self.input
        if key == "payload":
            return payload
        if key == "status":
            return self.status
        if key == "error":
            return self.error
        return MISSING


VIEW_FIELDS = ("result", "input", "payload", "status", "error")


def skip_reason(node, nodes: Mapping, states: Mapping[str, NodeState]) -> str | None:
    """None when a node whose parents are all final should run, else why it is skipped."""
    active = False
    for parent_id in node.parents:
        parent, state = nodes[parent_id], states[parent_id]
        if state.status == "skipped":
            if state.reason == "upstream_failed":
                return "upstream_failed"
            continue
        if state.status == "failure" and not parent.continue_on_error:
            return "upstream_failed"
        if parent.type == "if":
            active |= (state.result or {}).get("branch") == node.branch
        else:
            active = True
    return None if active else "branch_not_taken"


def node_view(node, state: NodeState) -> dict:
    """One entry of ``executionState``; fields that do not apply are omitted."""
    out: dict[str, Any] = {"type": node.type, "status": state.status, "level": node.level}
    if state.input is not MISSING:
        out["input"] = state.input
    if state.status == "success":
        out["result"] = state.result
    if state.error is not None and state.status == "failure":
        out["error"] = state.error
    if state.reason:
        out["reason"] = state.reason
    if state.started is not None:
        out["startedAt"] = iso(state.started)
        if state.finished is not None and state.status != "running":
            out["finishedAt"] = iso(state.finished)
            out["durationMs"] = max(0, round((state.finished - state.started) * 1000))
    if node.id != "root" and state.attempts:
        out["attempts"] = state.attempts
    return out
