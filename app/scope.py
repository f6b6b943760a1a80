"""What expressions can read during a run (SPEC §4), built from the run's state."""
from __future__ import annotations

from typing import Any

from .expressions import MISSING, Budget, Path, resolve_string, walk
from .plan import RunRequest
from .state import NodeState


class Scope:
    """What expressions can read (SPEC §4), built from the run's state."""

    def __init__(self, request: RunRequest, run_id: str, states: dict[str, NodeState]):
        plan = request.plan
        self.nodes, self.payload, self.states = plan.nodes, request.payload, states
        self.namespaces = {
            "$props": {**plan.props, **request.prop_values},
            "$inputs": {k: v for k, v in request.payload.items() if k in plan.input_keys},
            "$vars": plan.variables,
            "$run": {"id": run_id},
            "$workflow": {"id": ""},
        }

    def lookup(self, path: Path) -> Any:
        head, rest = path.head, path.segments[1:]
        if head == "$trigger":
            root = self.states["root"].result or {}
            value = {**root, "body": self.payload, "headers": {}, "source": "manual"}
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
            payload = self.nodes[head].payload
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
