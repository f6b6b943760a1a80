"""What validation checks inside node payloads (SPEC §2, §4): literal values
against the node type's schema (values holding expressions are checked once
resolved, before each attempt), and the holes of every expression — their
syntax, their namespaces, that a node is read only by its descendants, and
that loop variables and body nodes are read only inside their loop (SPEC §11).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .bodies import Bodies
from .dialect import errors_of, iter_flat, location_key
from .expressions import ExpressionError, Path, Template, is_template, parse
from .loops import LOOP_VARIABLES
from .nodes import NODE_TYPES
from .nodes.base import NodeType
from .problems import INVALID_DEFINITION, Invalid

NAMESPACES = {"$nodes", "$trigger", "$props", "$inputs", "$vars", "$run", "$workflow",
              *LOOP_VARIABLES}
# Payload fields whose strings may hold {{@field}} item holes (keys too, in conditions).
ITEM_FIELDS = {"format": ("template",), "filter": ("filter", "condition")}


@dataclass(frozen=True)
class _Refs:
    """What a reference is checked against."""

    nodes: Mapping[str, dict]
    ancestors: Mapping[str, set[str]]
    inputs: set
    bodies: Bodies


def check_payloads(definition: dict, nodes: dict, bodies: Bodies,
                   ancestors: Mapping[str, set[str]], problems: Invalid) -> None:
    """Every node payload's problems, added to ``problems`` at their locations.
    ``ancestors``: over children and loopBody edges (a body node's include its loop's)."""
    refs = _Refs(nodes, ancestors, {item.get("key") for item in
                                    definition.get("inputSchema", [])}, bodies)
    for node_id, node in nodes.items():
        node_type = NODE_TYPES.get(node.get("type"))
        if node_type is None or "payload" not in node or (
                node_id == "root" and node["type"] != "manual"):
            continue  # reported already: unknown type, or a root that is not manual
        where = f"definition.nodes.{node_id}.payload"
        payload = node["payload"]
        literal_errors = _literal_only(errors_of(node_type.payload, payload), payload)
        problems.extend(iter_flat(literal_errors, where), INVALID_DEFINITION)
        item_fields = ITEM_FIELDS.get(node["type"], ())
        for location, text, items_ok in _expression_strings(payload, node_type, item_fields):
            for why in _expression_problems(text, items_ok, node_id, refs):
                problems.add(location(where), why)


def _expression_problems(text: str, items_ok: bool, node_id: str, refs: _Refs
                         ) -> Iterator[str]:
    """What is wrong with the holes of one payload string."""
    try:
        template: Template = parse(text)
    except ExpressionError as error:
        yield str(error)
        return
    if template.item_holes and not items_ok:
        yield (f"{_clip(template.item_holes[0])}: an item field ({{{{@…}}}}) is only read by "
               "the format node's template and the filter node's filter/condition.")
    for hole in template.holes:
        for term in hole.terms:
            why = isinstance(term, Path) and _bad_reference(term, node_id, refs)
            if why:
                yield f"{_clip(hole.source)}: {why}"


def _clip(source: str) -> str:
    return source if len(source) <= 80 else source[:77] + "..."


def _literal_only(found: dict, value: Any) -> dict:
    """Drop schema errors about values that hold expressions (checked at run time)."""
    kept: dict = {}
    for key, sub in found.items():
        if key == "_schema":
            kept[key] = sub
            continue
        child = _child(value, key)
        if isinstance(child, str) and is_template(child) and parse_holes(child):
            continue
        if isinstance(sub, dict):
            sub = _literal_only(sub, child)
            if not sub:
                continue
        kept[key] = sub
    return kept


def parse_holes(text: str) -> bool:
    """True when ``text`` holds at least one hole (a bad one counts)."""
    try:
        return bool(parse(text).holes)
    except ExpressionError:
        return True


def _child(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return value.get(str(key))
    if isinstance(value, list) and isinstance(key, int) and key < len(value):
        return value[key]
    return None


class _Location:
    """A location built only when a problem is found there: the string of every value
    of a large payload under a long key would cost time and memory for nothing."""

    __slots__ = ("parent", "step")

    def __init__(self, parent: _Location | None, step: str | int):
        self.parent, self.step = parent, step

    def __call__(self, where: str) -> str:
        steps, node = [], self
        while node is not None:
            steps.append(f"[{node.step}]" if isinstance(node.step, int)
                         else f".{location_key(node.step)}")
            node = node.parent
        return where + "".join(reversed(steps))


def _expression_strings(payload: dict, node_type: NodeType, item_fields: tuple[str, ...]
                        ) -> Iterator[tuple[_Location, str, bool]]:
    """``(location, string, item holes allowed)`` of each string that may hold holes,
    condition keys too."""
    condition_fields = node_type.condition_fields
    stack: list[tuple[_Location, Any, bool, bool]] = [
        (_Location(None, str(k)), v, k in condition_fields, k in item_fields)
        for k, v in payload.items()]
    while stack:
        location, value, keys_too, items_ok = stack.pop()
        if isinstance(value, str):
            if is_template(value):
                yield location, value, items_ok
        elif isinstance(value, dict):
            for k, v in value.items():
                if keys_too and is_template(k):
                    yield _Location(location, str(k)), k, items_ok
                stack.append((_Location(location, str(k)), v, keys_too, items_ok))
        elif isinstance(value, list):
            stack.extend((_Location(location, i), v, keys_too, items_ok)
                         for i, v in enumerate(value))


def _bad_reference(term: Path, node_id: str, refs: _Refs) -> str | None:
    head, rest = term.head, term.segments[1:]
    if head == "$nodes":
        if not rest:
            return "'$nodes' needs a node id ($nodes.<id>.result…)."
        head = str(rest[0])
    elif head == "$inputs":
        if rest and str(rest[0]) not in refs.inputs:
            return f"input {rest[0]!r} is not declared in inputSchema."
        return None
    elif head in LOOP_VARIABLES:
        return _bad_loop_variable(head, rest, node_id, refs.bodies.loops_around(node_id))
    elif head.startswith("$"):
        if head not in NAMESPACES:
            return f"unknown namespace {head!r}; known: {', '.join(sorted(NAMESPACES))}."
        return None
    if head not in refs.nodes:
        return f"unknown node {head!r}."
    if head not in refs.ancestors.get(node_id, ()):
        loop = refs.bodies.owner.get(head)
        if loop is not None and loop not in refs.bodies.loops_around(node_id):
            return (f"node {head!r} is in the body of loop {loop!r} and has a result per "
                    f"iteration; after the loop, read {{{{{loop}.result.iterations}}}}.")
        return (f"node {head!r} is not an ancestor of {node_id!r}; "
                "only ancestors have results to read.")
    return None


def _bad_loop_variable(head: str, rest: tuple, node_id: str, loops: list[str]) -> str | None:
    """``$item``, ``$index``, ``$parent_…`` and ``$for.<id>.…`` read the loops around
    ``node_id`` (innermost first)."""
    if not loops:
        return f"{head} is only defined inside a loop's body (a for-each node's loopBody)."
    if head.startswith("$parent_") and len(loops) < 2:
        return f"{head} is only defined inside a loop that is itself in a loop's body."
    if head == "$for":
        if len(rest) < 2 or str(rest[1]) not in ("item", "index"):
            return "'$for' needs a loop id, then item or index ($for.<loopId>.item)."
        if str(rest[0]) not in loops:
            return f"loop {rest[0]!r} does not hold node {node_id!r} in its body."
    return None
