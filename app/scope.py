"""What expressions can read during a run (SPEC §4), built from the run's state.

Inside a loop's body (SPEC §11) an expression is read in its iteration's
``Frame``: ``$item``/``$index`` are the iteration's, ``$parent_…`` the
enclosing loop's, ``$for.<loop>.…`` any enclosing loop's, and a reference to a
body node reads that node's instance in the same iteration (``check[3]``).
"""
from __future__ import annotations

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
        plan = request.plan
        self.nodes, self.payload, self.states = plan.nodes, request.payload, states
        self.namespaces = {
            "$props": {**plan.props, **request.prop_values},
            "$inputs": {k: v for k, v in request.payload.items() if k in plan.input_keys},
            "$vars": plan.variables,
            "$run": {"id": run_id},
            "$workflow": {"id": ""},
        }

    def lookup(self, path: Path, frame: Frame | None = None) -> Any:
        head, rest = path.head, path.segments[1:]
        if head == "$trigger":
            root = self.states["root"].result or {}
            value = {**root, "body": self.payload, "headers": {}, "source": "manual"}
        elif head in self.namespaces:
            value = self.namespaces[head]
        elif head in LOOP_VARIABLES:
            value, rest = _loop_variable(head, rest, frame)
        else:
            if head == "$nodes":
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
            value, rest = state.field(str(rest[0]), node.payload), rest[1:]
            if value is MISSING:
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
        lookup = self.lookup_in(frame)
        return lambda text, budget=None: resolve_string(text, lookup, budget)


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
