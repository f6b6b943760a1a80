"""What validation checks inside node payloads (SPEC §2, §4): literal values
against the node type's schema (values holding expressions are checked once
resolved, before each attempt), and the holes of every expression — their
syntax, their namespaces, that a node is read only by its descendants, that
the path after a node id can lead somewhere (app/shapes.py), and that loop
variables and body nodes are read only inside their loop (SPEC §11).

Unknown payload keys are accepted and ignored (SPEC §1, B3OS's definitions carry
some), but one is often a misspelling: a required key reported missing names the
unknown key that looks like it, and ``unknown_keys`` lists them all as warnings
(``/v1/workflows/validate``).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from . import shapes
from .bodies import Bodies
from .dialect import errors_of, iter_flat, location_key, schema_of
from .expressions import ExpressionError, Path, is_template, parse, parse_each
from .loops import LOOP_VARIABLES
from .nodes import NODE_TYPES
from .nodes.base import NodeType
from .plan import Plan
from .problems import INVALID_DEFINITION, TRUNCATED, Invalid, closest, did_you_mean

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
    # Nodes cut off from root only by an unknown child id (validation's ``_cut_off``):
    # their ancestors and the loops around them are not known, so what they read is
    # not held to them.
    cut_off: frozenset[str]
    problems: Invalid


def check_payloads(definition: dict, nodes: dict, bodies: Bodies,
                   ancestors: Mapping[str, set[str]], problems: Invalid,
                   cut_off: frozenset[str] = frozenset()) -> None:
    """Every node payload's problems, added to ``problems`` at their locations.
    ``ancestors``: over children and loopBody edges (a body node's include its loop's)."""
    refs = _Refs(nodes, ancestors, {item.get("key") for item in
                                    definition.get("inputSchema", [])}, bodies, cut_off,
                 problems)
    for node_id, node in nodes.items():
        node_type = NODE_TYPES.get(node.get("type"))
        if node_type is None or "payload" not in node or (
                node_id == "root" and node["type"] != "manual"):
            continue  # reported already: unknown type, or a root that is not manual
        where = f"definition.nodes.{node_id}.payload"
        payload = node["payload"]
        literal_errors = _literal_only(errors_of(node_type.payload, payload), payload)
        if literal_errors and isinstance(payload, dict):
            _name_misspellings(literal_errors, payload, node_type, problems)
        problems.extend(iter_flat(literal_errors, where), INVALID_DEFINITION)
        item_fields = ITEM_FIELDS.get(node["type"], ())
        for location, text, items_ok in _expression_strings(payload, node_type, item_fields):
            for why in _expression_problems(text, items_ok, node_id, refs):
                problems.add(location(where), why)


def _expression_problems(text: str, items_ok: bool, node_id: str, refs: _Refs
                         ) -> Iterator[str]:
    """What is wrong with the holes of one payload string: every bad hole, and every
    problem of the others."""
    try:
        template = parse(text)
        holes, item_holes = template.holes, template.item_holes
    except ExpressionError:
        holes, item_holes, errors = parse_each(text)
        yield from errors
    if item_holes and not items_ok:
        yield (f"{_clip(item_holes[0])}: an item field ({{{{@…}}}}) is only read by "
               "the format node's template and the filter node's filter/condition.")
    for hole in holes:
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
        head, rest = str(rest[0]), rest[1:]
    elif head == "$inputs":
        if rest and str(rest[0]) not in refs.inputs:
            return f"input {rest[0]!r} is not declared in inputSchema."
        return None
    elif head in LOOP_VARIABLES:
        if node_id in refs.cut_off:
            return None  # which loops hold it is not known
        return _bad_loop_variable(head, rest, node_id, refs.bodies.loops_around(node_id))
    elif head.startswith("$"):
        if head not in NAMESPACES:
            return f"unknown namespace {head!r}; known: {', '.join(sorted(NAMESPACES))}."
        return None
    if head not in refs.nodes:
        return f"unknown node {head!r}."
    if head not in refs.ancestors.get(node_id, ()) and node_id not in refs.cut_off:
        loop = refs.bodies.owner.get(head)
        if loop is not None and loop not in refs.bodies.loops_around(node_id):
            return (f"node {head!r} is in the body of loop {loop!r} and has a result per "
                    f"iteration; after the loop, read {{{{{loop}.result.iterations}}}}.")
        return (f"node {head!r} is not an ancestor of {node_id!r}; "
                "only ancestors have results to read.")
    node = refs.nodes[head]
    node_type = NODE_TYPES.get(node.get("type"))
    if node_type is None:
        return None  # reported at that node
    return shapes.problem(head, node, node_type, rest, refs.problems.may_hint)


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


# -- unknown payload keys ----------------------------------------------------------------

MISSING_REQUIRED = "Missing data for required field"


@functools.cache
def known_keys(schema_class: type[Schema]) -> frozenset[str]:
    """The payload keys a node type reads, as written (``global``, not ``global_``)."""
    return frozenset(field.data_key or name
                     for name, field in schema_of(schema_class).load_fields.items())


def _name_misspellings(errors: dict, payload: dict, node_type: NodeType,
                       problems: Invalid) -> None:
    """Where a required key is missing, name the unknown key of ``payload`` that looks
    like it: it is ignored, so the misspelling alone shows as the missing key."""
    known, unknown = known_keys(node_type.payload), None
    for key, messages in errors.items():
        if key not in known or not isinstance(messages, list) or not any(
                m.startswith(MISSING_REQUIRED) for m in messages) or not problems.may_hint():
            continue
        if unknown is None:
            unknown = [k for k in payload if k not in known]
        typo = closest(key, unknown)
        if typo is not None:
            errors[key] = [
                f"{m} The payload has {_quoted(typo)}, which {node_type.name} does not know "
                f"and ignores: a misspelling of {key!r}?" if m.startswith(MISSING_REQUIRED)
                else m for m in messages]


def unknown_keys(plan: Plan, limit: int) -> dict[str, list[str]]:
    """Each payload key that its node's type does not read (accepted and ignored), at
    its location, with the key it may misspell; at most ``limit`` of them."""
    found: dict[str, list[str]] = {}
    for node_id, node in plan.nodes.items():
        if node.type == "manual":
            continue  # the root's payload keys are defaults of its result: all read
        known = known_keys(node.node_type.payload)
        absent = [k for k in known if k not in node.payload]
        for key in node.payload:
            if key in known:
                continue
            if len(found) >= limit:
                found[TRUNCATED] = [f"More unknown keys were found; only the first {limit} "
                                    "are listed."]
                return found
            where = f"definition.nodes.{location_key(node_id)}.payload.{location_key(key)}"
            found[where] = [_unknown_key(key, node.type, absent)]
    return found


def _unknown_key(key: str, type_name: str, absent: list[str]) -> str:
    return f"Not a field of {type_name}: ignored.{did_you_mean(key, absent)}"


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "…"
