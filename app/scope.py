"""What expressions can read during a run (SPEC §4), built from the run's state.

Inside a loop's body (SPEC §11) an expression is read in its iteration's
``Frame``: ``$item``/``$index`` are the iteration's, ``$parent_…`` the
enclosing loop's, ``$for.<loop>.…`` any enclosing loop's, and a reference to a
body node reads that node's instance in the same iteration (``check[3]``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .expressions import MISSING, Budget, Path, resolve_string, walk
from .loops import LOOP_VARIABLES, Frame
from .plan import RunRequest
from .state import NodeState

Lookup = Callable[[Path], Any]


class Scope:
    """What expressions can read (SPEC §4), built from the run's state."""

    def __init__(self, request: RunRequest, run_id: str, states: dict[str, NodeState]):
        self.request, self.run_id = request, run_id
        self.nodes, self.payload, self.states = request.plan.nodes, request.payload, states

    @functools.cached_property
    def namespaces(self) -> dict[str, Any]:
        """``$props``, ``$inputs``, ``$vars``, ``$run``, ``$workflow``: made when a run first
        reads one (most read only node results)."""
        plan, request = self.request.plan, self.request
        return {
            "$props": {**plan.props, **request.prop_values},
            "$inputs": {k: v for k, v in request.payload.items() if k in plan.input_keys},
            "$vars": plan.variables,
            "$run": {"id": self.run_id},
            "$workflow": {"id": ""},
        }

    def lookup(self, path: Path, frame: Frame | None = None) -> Any:
        head, rest, leaf = path.head, path.rest, path.key
        node = self.nodes.get(head)  # node ids never start with "$": a namespace's do
        if node is None:
            leaf = None  # ``$nodes.id.field.key`` is one segment longer
            if head != "$nodes":
                return self._namespace(head, rest, frame)
            if not rest:
                return MISSING
            head, rest = str(rest[0]), rest[1:]
            node = self.nodes.get(head)
            if node is None:
                return MISSING
        if node.loop is not None:  # a body node: its instance in this iteration
            outer = frame.find(node.loop) if frame is not None else None
            if outer is None:
                return MISSING
            state = self.states.get(head + outer.suffix)
        else:
            state = self.states.get(head)
        if state is None:
            return MISSING
        if not rest:
            return state.view(node.payload)
        # Most paths read one field (``node.result.x``): no need to build the view.
        key = rest[0]
        value = state.result if key == "result" else state.field(str(key), node.payload)
        if value is MISSING:
            return MISSING
        if leaf is not None and value.__class__ is dict:  # node.field.key: no walk
            return value.get(leaf, MISSING)
        return walk(value, rest[1:])

    def _namespace(self, head: str, rest: tuple, frame: Frame | None) -> Any:
        """``lookup`` of a path whose head is a ``$`` namespace (``$nodes`` aside)."""
        if head == "$trigger":
            root = self.states["root"].result or {}
            value = {**root, "body": self.payload, "headers": {}, "source": "manual"}
        elif head in self.namespaces:
            value = self.namespaces[head]
        elif head in LOOP_VARIABLES:
            value, rest = _loop_variable(head, rest, frame)
        else:
            return MISSING
        return walk(value, rest)

    def lookup_in(self, frame: Frame | None) -> Lookup:
        """``lookup`` for expressions read in ``frame`` (None: outside every loop)."""
        if frame is None:
            return self.lookup
        return lambda path: self.lookup(path, frame)

    def key_resolver(self, frame: Frame | None) -> Callable[[str, Budget | None], Any]:
        """A condition key's resolver in ``frame``: one whole-value expression, or the
        text as written."""
        if frame is None:
            return self.resolve_key
        lookup = self.lookup_in(frame)
        return lambda text, budget=None: resolve_string(text, lookup, budget)

    def resolve_key(self, text: str, budget: Budget | None = None) -> Any:
        """A condition key outside every loop (``key_resolver(None)``)."""
        return resolve_string(text, self.lookup, budget)


def _loop_variable(head: str, rest: tuple, frame: Frame | None) -> tuple[Any, tuple]:
    """The value a loop variable names, and the rest of the path to walk into it."""
    if head.startswith("$parent_"):
        frame = frame.parent if frame is not None else None
    elif head == "$for":
        if len(rest) < 2 or frame is None:
            return MISSING, ()
        frame, head, rest = frame.find(str(rest[0])), "$" + str(rest[1]), rest[2:]
    if frame is None:
        return MISSING, ()
    return (frame.item if head.endswith("item") else frame.index), rest
