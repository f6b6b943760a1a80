"""What validation hands the engine: a checked definition, its nodes and limits."""
from __future__ import annotations

from dataclasses import dataclass, field

from .nodes.base import NodeType


@dataclass(frozen=True)
class Limits:
    max_nodes: int = 20
    run_deadline_ms: int = 60_000
    max_problems: int = 1000  # validation errors listed in one answer (SPEC §3)


@dataclass
class PlanNode:
    id: str
    type: str
    node_type: NodeType
    payload: dict
    children: list[str]
    parents: list[str]
    level: int
    branch: str | None = None
    continue_on_error: bool = False
    timeout_ms: int | None = None
    retry: dict | None = None

    @property
    def max_attempts(self) -> int:
        return self.retry["maxAttempts"] if self.retry else 1


@dataclass
class Plan:
    """A checked definition: nodes in response order (level, then position)."""

    nodes: dict[str, PlanNode]
    definition: dict
    payload: dict = field(default_factory=dict)
    prop_values: dict = field(default_factory=dict)
    run_id: str | None = None
    timeout_ms: int | None = None
    # The values of secret keys in the definition (redact.definition_values), found
    # once per checked definition rather than once per run.
    secrets: list = field(default_factory=list)

    @property
    def levels(self) -> list[list[str]]:
        out: list[list[str]] = []
        for node in self.nodes.values():
            if node.level == len(out):
                out.append([])
            out[node.level].append(node.id)
        return out

    @property
    def worst_case_cu(self) -> int:
        """Every non-root node at its maximum attempts (SPEC §8)."""
        return sum(n.max_attempts for n in self.nodes.values() if n.id != "root")
