"""What expressions can read during a run (SPEC §4), built from the run's state."""
from __future__ import annotations

from typing import Any

from .expressions import MISSING, Budget, Path, resolve_string, walk
from .plan import Plan
from .state import NodeState


class Scope:
    """What expressions can read (SPEC §4), built from the run's state."""

    def __init__(self, plan: Plan, run_id: str, states: dict[str, NodeState]):
        definition = plan.definition
        declared = {item["key"] for item in definition.get("inputSchema", [])}
        self.plan, self.states = plan, states
        self.namespaces = {
            "$props": {**definition.get("props", {}), **plan.prop_values},
            "$inputs": {k: v for k, v in plan.payload.items() if k in declared},
            "$vars": {v["name"]: v.get("default") for v in definition.get("variableDefs", [])},
            "$run": {"id": run_id},
            "$workflow": {"id": ""},
        }

    def lookup(self, path: Path) -> Any:
        head, rest = path.head, path.segments[1:]
        if head == "$trigger":
            root = self.states["root"].result or {}
            value = {**root, "body": self.plan.payload, "headers": {}, "source": "manual"}
        elif head in self.namespaces:
            value = self.namespaces[head]
        else:
            if head == "$nodes":
                if not rest:
                    return MISSING
                head, rest = str(rest[0]), rest[1:]
            state = self.states.get(head)
            if state is None:
                return MISSING
            payload = self.plan.nodes[head].payload
            if not rest:
                return state.view(payload)
            # Most paths read one field (``node.result.x``): no need to build the view.
            value, rest = state.field(str(rest[0]), payload), rest[1:]
            if value is MISSING:
                return MISSING
        return walk(value, rest)

    def resolve_key(self, text: str, budget: Budget | None = None) -> Any:
        """A condition key: one whole-value expression, or the text as written."""
        return resolve_string(text, self.lookup, budget)
