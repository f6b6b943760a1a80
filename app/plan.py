"""What validation hands the engine: a ``Plan`` (what it decided about a definition,
frozen, so one can be cached and shared by every request that sends the same
definition) and a ``RunRequest`` (the plan and what one request adds: payload,
property values, run id, time limit).

The engine reads the plan and never the raw definition. Nothing here is
mutated after validation; the payload dicts are shared between runs and are
only ever read (expressions resolve into new values). What a node does with
its payload before each attempt — resolve its expressions, check the result —
is worked out once per plan (``PlanNode.resolve_input``, ``PlanNode.load_input``),
the first time a run needs it: a cached plan serves every request that sends
the same definition.
"""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .dialect import compile_load
from .expressions import Resolver, compile_payload

if TYPE_CHECKING:
    from .nodes.base import NodeType


@dataclass(frozen=True)
class Limits:
    max_nodes: int = 20
    run_deadline_ms: int = 60_000
    max_problems: int = 1000  # validation errors listed in one answer (SPEC §3)


@dataclass(frozen=True, eq=False)
class PlanNode:
    id: str
    type: str
    node_type: NodeType
    payload: Mapping[str, Any]  # as written: values may hold expressions
    children: tuple[str, ...]
    parents: tuple[str, ...]
    level: int
    branch: str | None = None
    continue_on_error: bool = False
    timeout_ms: int | None = None
    retry: Mapping[str, Any] | None = None
    loop: str | None = None  # the for-each node whose body holds this one (SPEC §11)
    body: tuple[str, ...] = ()  # a for-each node's: the nodes it holds directly, in order
    entries: tuple[str, ...] = ()  # a for-each node's: its loopBody, as written
    depth: int = 0  # a for-each node's: 1 when in no other loop's body

    @property
    def max_attempts(self) -> int:
        return self.retry["maxAttempts"] if self.retry else 1

    @property
    def worst_case_cu(self) -> int:
        """Every attempt started, at its type's cost (SPEC §8)."""
        return self.max_attempts * self.node_type.cu_per_attempt

    @functools.cached_property
    def always_inline(self) -> bool:
        """Whether every attempt runs on the scheduling thread, whatever its input."""
        return self.node_type.inline

    @functools.cached_property
    def static_limit_ms(self) -> float | None:
        """An attempt's time limit when its input cannot change it (``attempts.limit_ms``
        without a ``timeout_field``), else None."""
        node_type = self.node_type
        if node_type.timeout_field:
            return None
        limits = [node_type.max_timeout_ms]
        if self.timeout_ms:
            limits.append(self.timeout_ms)
        return max(0.0, min(limits))

    @functools.cached_property
    def logger(self) -> logging.Logger:
        """The logger its handler writes to (``app.nodes.<type>``)."""
        return logging.getLogger(f"app.nodes.{self.type}")

    @functools.cached_property
    def _compiled(self) -> tuple[Resolver, frozenset[str]]:
        return compile_payload(self.payload)

    @functools.cached_property
    def resolve_input(self) -> Resolver:
        """``resolve(self.payload, lookup, budget)`` as a function of ``(lookup, budget)``,
        its templates parsed once (expressions.compile_payload)."""
        return self._compiled[0]

    @functools.cached_property
    def load_input(self) -> Callable[[Any], Any]:
        """``dialect.load`` of this node's payload type, for the payload resolved: what
        the literal values passed at validation is not checked again
        (dialect.compile_load)."""
        return compile_load(self.node_type.payload, self.payload, self._compiled[1])


@dataclass(frozen=True, eq=False)
class Plan:
    """A checked definition: its nodes, and the parts of the definition that a run reads.

    ``nodes`` holds every node: first those outside loop bodies in response order
    (level, then position), then each loop's body nodes; ``top`` lists the first.
    """

    nodes: Mapping[str, PlanNode]
    top: tuple[str, ...]
    props: Mapping[str, Any]  # definition.props
    input_keys: frozenset[str]  # the keys declared in inputSchema
    variables: Mapping[str, Any]  # variableDefs: name → default
    sensitive_prop_keys: tuple[str, ...]
    # The values of secret keys in props and node payloads (redact.definition_values),
    # found once per checked definition rather than once per run.
    secrets: tuple[Any, ...] = ()

    @functools.cached_property
    def levels(self) -> list[list[str]]:
        """The nodes outside loop bodies, level by level."""
        out: list[list[str]] = []
        for node_id in self.top:
            level = self.nodes[node_id].level
            while len(out) <= level:
                out.append([])
            out[level].append(node_id)
        return out

    @functools.cached_property
    def top_nodes(self) -> dict[str, PlanNode]:
        """The nodes outside loop bodies by id: what a run copies to start from."""
        return {node_id: self.nodes[node_id] for node_id in self.top}

    @functools.cached_property
    def parent_counts(self) -> dict[str, int]:
        """Each node outside loop bodies: how many parents it waits for (copied per run)."""
        return {node_id: len(self.nodes[node_id].parents) for node_id in self.top}

    @functools.cached_property
    def shape_text(self) -> str:
        """The definition's shape as compact JSON text, made once per plan (every run
        stores it), for drawing a run of it (SPEC §14): each node's type, level and
        children, and where they apply its branch, loop body (``loopBody``), loop
        (``loop``: the for-each whose body holds it), ``maxAttempts`` and
        ``continueOnError``. No payloads: nothing here is secret."""
        return json.dumps({node.id: _shape(node) for node in self.nodes.values()},
                          separators=(",", ":"))

    @functools.cached_property
    def loops(self) -> dict[str, dict]:
        """Each for-each node's body and depth (``/v1/workflows/validate``)."""
        return {node.id: {"body": list(node.body), "depth": node.depth}
                for node in self.nodes.values() if node.depth}

    @functools.cached_property
    def worst_case_cu(self) -> int:
        """What a run of this plan reserves before it starts: every node outside loop
        bodies at its maximum attempts (SPEC §8); a loop reserves its items' worst case
        when it starts (SPEC §11)."""
        return sum(self.nodes[node_id].worst_case_cu for node_id in self.top)


def _shape(node: PlanNode) -> dict:
    shape = {"type": node.type, "level": node.level, "children": list(node.children)}
    if node.branch:
        shape["branch"] = node.branch
    if node.entries:
        shape["loopBody"] = list(node.entries)
    if node.loop:
        shape["loop"] = node.loop
    if node.max_attempts > 1:
        shape["maxAttempts"] = node.max_attempts
    if node.continue_on_error:
        shape["continueOnError"] = True
    return shape


class RunRequest(NamedTuple):  # (a frozen dataclass's __init__ costs 3 times as much)
    """One request to run a plan."""

    plan: Plan
    payload: Mapping[str, Any]
    prop_values: Mapping[str, Any]
    run_id: str | None = None  # chosen by the client, else the run gets a new one
    timeout_ms: int | None = None  # the client's own run deadline, within the server's
