"""Every "is this request acceptable" rule of SPEC §1–§2, before anything runs.

``check_request(body, limits)`` returns a ``Plan`` (what the engine runs) or
raises ``Invalid`` with every problem found, each under its location as a flat
path (``definition.nodes.check.children[1]``) and with its error code.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from marshmallow import Schema, ValidationError

from . import errors, graph
from .expressions import ExpressionError, Path, Template, is_template, parse
from .nodes import NODE_TYPES, REJECTED_IN_SYNC
from .nodes.base import NodeType, load, schema_of
from .plan import Limits, Plan, PlanNode
from .redact import definition_values
from .schemas import (
    NODE_ID,
    DefinitionSchema,
    NodeSchema,
    RunRequestSchema,
    ValidateRequestSchema,
    iter_flat,
    location_key,
)

NAMESPACES = {"$nodes", "$trigger", "$props", "$inputs", "$vars", "$run", "$workflow"}
JSON_TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,),
              "object": (dict,), "array": (list,)}
# Payload fields whose strings may hold {{@field}} item holes (keys too, in conditions).
ITEM_FIELDS = {"format": ("template",), "filter": ("filter", "condition")}
# A location or message quoting a hostile value is cut: an error body stays small.
MESSAGE_CHARS = 500
TRUNCATED = "_truncated"  # the location of the note that problems were left out


class Invalid(Exception):
    """Every problem of a request: ``errors`` path → messages, ``codes`` path → code.

    At most ``limit`` problems are listed, a problem being one message (a location
    can hold several): a hostile definition can hold millions, and the answer must
    stay small. Past the limit one more entry, under ``_truncated``, says so; the
    problems left out still count for the envelope's ``code``.
    """

    def __init__(self, limit: int = 1000):
        super().__init__("invalid request")
        self.errors: dict[str, list[str]] = {}
        self.codes: dict[str, int] = {}
        self.limit, self.listed = limit, 0
        self.known_types_listed = False  # said once per answer, not a thousand times
        self._left_out_codes: set[int] = set()

    @property
    def full(self) -> bool:
        return self.listed >= self.limit

    def add(self, path: str, message: str, code: int = errors.INVALID_DEFINITION) -> None:
        if self.full:
            self._left_out(code)
            return
        self.listed += 1
        if len(path) > MESSAGE_CHARS:
            path = path[:MESSAGE_CHARS - 1] + "…"
        if len(message) > MESSAGE_CHARS:
            message = message[:MESSAGE_CHARS - 1] + "…"
        self.errors.setdefault(path, []).append(message)
        self.codes.setdefault(path, code)

    def extend(self, pairs: Iterator[tuple[str, str]],
               code: int = errors.INVALID_DEFINITION) -> None:
        """Add ``(location, message)`` pairs; stops reading them when full."""
        for path, message in pairs:
            if self.full:
                self._left_out(code)
                return
            self.add(path, message, code)

    def _left_out(self, code: int) -> None:
        self._left_out_codes.add(code)
        self.errors[TRUNCATED] = [f"More problems were found; only the first {self.limit} "
                                  "are listed."]

    @property
    def code(self) -> int:
        present = set(self.codes.values()) | self._left_out_codes
        return next(c for c in errors.CODE_PRECEDENCE if c in present)


# The code of a problem with a top-level field; any other field (unknown ones too,
# whatever they are called: "payload.x", "_schema") is an invalid definition.
FIELD_CODES = {"payload": errors.INVALID_PAYLOAD, "propValues": errors.INVALID_PAYLOAD,
               "runId": errors.INVALID_RUN_ID}


def check_request(body: dict, limits: Limits, validate_only: bool = False) -> Plan:
    """The plan of a run request, or ``Invalid`` listing every problem."""
    problems = Invalid(limits.max_problems)
    schema = ValidateRequestSchema if validate_only else RunRequestSchema
    request = _load_request(schema, body, problems)
    timeout = request.get("timeoutMs")
    if timeout is not None and not 1 <= timeout <= limits.run_deadline_ms:
        problems.add("timeoutMs", f"Must be between 1 and {limits.run_deadline_ms}.")
    plan = None
    if "definition" in request:
        definition, plan = _checked_definition(request["definition"], limits, problems)
        _check_inputs(definition, request.get("payload", {}), problems)
    if problems.errors:
        raise problems
    return dataclasses.replace(plan, payload=request["payload"],
                               prop_values=request["propValues"],
                               run_id=request.get("runId"), timeout_ms=timeout)


# Checked definitions, by their JSON text: clients send the same definition again
# and again, and checking one costs more than running it. Only definitions up to
# CACHEABLE_CHARS are kept, so the cache holds at most a few MiB.
CACHEABLE_CHARS = 64 * 1024
PLAN_CACHE_SIZE = 256
_plans: OrderedDict[tuple, Plan] = OrderedDict()
_plans_lock = threading.Lock()


def _checked_definition(raw: Any, limits: Limits, problems: Invalid
                        ) -> tuple[dict, Plan | None]:
    """The loaded definition and its plan (None if invalid); seen before, from the cache."""
    key = None
    if isinstance(raw, dict):
        text = json.dumps(raw, separators=(",", ":"), default=str)
        if len(text) <= CACHEABLE_CHARS:
            key = (text, limits)
            with _plans_lock:
                if key in _plans:
                    _plans.move_to_end(key)
                    return _plans[key].definition, _plans[key]
    definition = _load(schema_of(DefinitionSchema), raw, "definition", problems)
    if not isinstance(definition.get("nodes"), dict):
        return definition, None
    plan = _check_definition(definition, limits, problems)
    if plan is not None and key is not None and not problems.errors:
        with _plans_lock:
            _plans[key] = plan
            if len(_plans) > PLAN_CACHE_SIZE:
                _plans.popitem(last=False)
    return definition, plan


def _load_request(schema: type[Schema], body: dict, problems: Invalid) -> dict:
    """The top level: each problem located at its field's name, with that field's code."""
    try:
        return load(schema, body)
    except ValidationError as error:
        for key, messages in error.messages.items():
            problems.extend(iter_flat(messages, location_key(key)),
                            FIELD_CODES.get(key, errors.INVALID_DEFINITION))
        return error.valid_data if isinstance(error.valid_data, dict) else {}


def _load(schema: Schema, data: Any, prefix: str, problems: Invalid) -> dict:
    try:
        return schema.load(data)
    except ValidationError as error:
        problems.extend(iter_flat(error.messages, prefix))
        return error.valid_data if isinstance(error.valid_data, dict) else {}


def _check_definition(definition: dict, limits: Limits, problems: Invalid) -> Plan | None:
    raw_nodes = definition["nodes"]
    nodes = {}
    for node_id, raw in raw_nodes.items():
        where = f"definition.nodes.{location_key(node_id)}"
        if not re.fullmatch(NODE_ID, node_id):
            problems.add(where, "Node ids must match ^[A-Za-z0-9_-]{1,64}$.")
        node = _plain_node(raw) or _load(schema_of(NodeSchema), raw, where, problems)
        node.setdefault("children", [])
        nodes[node_id] = node
        _check_type(node_id, node, problems)
    if len(nodes) > limits.max_nodes:
        problems.add("definition.nodes", f"A workflow has at most {limits.max_nodes} nodes "
                     f"(the root included); this one has {len(nodes)}.")
    if "root" not in nodes:
        problems.add("definition.nodes.root", "The root node is missing.")
    edges = _check_edges(nodes, problems)
    if edges is None:
        return None
    levels = graph.levels(edges, "root")
    for node_id in nodes:
        if node_id not in levels:
            problems.add(f"definition.nodes.{node_id}", "Not reachable from root.")
    parents = graph.parents_of(edges)
    _check_branches(nodes, parents, problems)
    if len(nodes) <= limits.max_nodes:  # ancestor sets are quadratic: only for sane sizes
        _check_payloads(definition, nodes, graph.ancestors(edges), problems)
    if problems.errors:
        return None
    position = {node_id: i for i, node_id in enumerate(nodes)}
    order = sorted(nodes, key=lambda n: (levels[n], position[n]))
    return Plan({n: _plan_node(n, nodes[n], parents[n], levels[n]) for n in order}, definition,
                secrets=definition_values(definition))


# NodeSchema's fields that a plain node does not have.
_NOT_PLAIN = frozenset(("branch", "continueOnError", "timeoutMs", "retry"))


def _plain_node(raw: Any) -> dict | None:
    """A node of only ``type``, ``payload`` and ``children`` (and ignored display keys),
    well typed, as NodeSchema would load it; None for any other, loaded by the schema.
    A request can hold tens of thousands of nodes, and the schema costs ~100 µs each."""
    if not isinstance(raw, dict) or _NOT_PLAIN & raw.keys() or \
            not isinstance(raw.get("type"), str):
        return None
    payload, children = raw.get("payload", {}), raw.get("children", [])
    if not isinstance(payload, dict) or not isinstance(children, list) or \
            not all(isinstance(child, str) for child in children):
        return None
    return {"type": raw["type"], "payload": payload, "children": list(children),
            "continueOnError": False}


def _plan_node(node_id: str, node: dict, parents: list[str], level: int) -> PlanNode:
    return PlanNode(
        id=node_id, type=node["type"], node_type=NODE_TYPES[node["type"]],
        payload=node["payload"], children=node["children"], parents=parents, level=level,
        branch=node.get("branch"), continue_on_error=node["continueOnError"],
        timeout_ms=node.get("timeoutMs"), retry=node.get("retry"))


def _check_type(node_id: str, node: dict, problems: Invalid) -> None:
    kind, where = node.get("type"), f"definition.nodes.{location_key(node_id)}.type"
    if kind is None:
        return  # already reported by the schema
    if node_id == "root":
        if kind != "manual":
            problems.add(where, f"The root node must be of type 'manual', not {kind!r}.",
                         errors.ROOT_NOT_MANUAL)
    elif kind == "manual":
        problems.add(where, "Type 'manual' is only allowed for the root node.")
    elif kind in REJECTED_IN_SYNC:
        problems.add(where, REJECTED_IN_SYNC[kind])
    elif kind not in NODE_TYPES:
        if problems.known_types_listed:  # a thousand copies would make most of the answer
            problems.add(where, f"Unknown node type {_quoted(kind)}.")
            return
        known = ", ".join(sorted(t for t in NODE_TYPES if t != "manual"))
        problems.add(where, f"Unknown node type {_quoted(kind)}. Known types: {known}.")
        problems.known_types_listed = True


def _check_edges(nodes: dict, problems: Invalid) -> dict[str, list[str]] | None:
    """Children exist, no self-loops or cycles; the edges, or None if unusable."""
    edges: dict[str, list[str]] = {}
    for node_id, node in nodes.items():
        edges[node_id], seen = [], set()  # the set: a long list is checked in linear time
        for i, child in enumerate(node["children"]):
            where = f"definition.nodes.{location_key(node_id)}.children[{i}]"
            if child == node_id:
                problems.add(where, f"Node {_quoted(node_id)} lists itself as a child.")
            elif child not in nodes:
                problems.add(where, f"Unknown node {_quoted(child)}.")
            elif child in seen:
                problems.add(where, f"Child {_quoted(child)} is listed twice.")
            else:
                edges[node_id].append(child)
                seen.add(child)
    cycle = graph.find_cycle(edges)
    if cycle:
        problems.add(f"definition.nodes.{location_key(cycle[-2])}.children",
                     "Cycle: " + " → ".join(cycle) + ".")
        return None
    return edges if "root" in nodes else None


def _quoted(text: str) -> str:
    """A value as quoted in a message: a long one cut, without copying all of it."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "…"


def _check_branches(nodes: dict, parents: dict[str, list[str]], problems: Invalid) -> None:
    for node_id, node in nodes.items():
        under_if = any(nodes[p].get("type") == "if" for p in parents[node_id])
        where = f"definition.nodes.{location_key(node_id)}.branch"
        if under_if and "branch" not in node:
            problems.add(where, "Required on a child of an 'if' node ('then' or 'else').")
        elif not under_if and "branch" in node:
            problems.add(where, "Only allowed on a child of an 'if' node.")


def _check_payloads(definition: dict, nodes: dict, ancestors: dict[str, set[str]],
                    problems: Invalid) -> None:
    inputs = {item.get("key") for item in definition.get("inputSchema", [])}
    for node_id, node in nodes.items():
        node_type = NODE_TYPES.get(node.get("type"))
        if node_type is None or "payload" not in node or (
                node_id == "root" and node["type"] != "manual"):
            continue  # reported already: unknown type, or a root that is not manual
        where = f"definition.nodes.{node_id}.payload"
        payload = node["payload"]
        literal_errors = _literal_only(schema_of(node_type.payload).validate(payload), payload)
        problems.extend(iter_flat(literal_errors, where), errors.INVALID_DEFINITION)
        item_fields = ITEM_FIELDS.get(node["type"], ())
        for location, text, items_ok in _expression_strings(payload, node_type, item_fields):
            for why in _expression_problems(text, items_ok, node_id, nodes, ancestors, inputs):
                problems.add(location(where), why)


def _expression_problems(text: str, items_ok: bool, node_id: str, nodes: dict,
                         ancestors: dict[str, set[str]], inputs: set[str]) -> Iterator[str]:
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
            why = isinstance(term, Path) and _bad_reference(term, node_id, nodes, ancestors,
                                                            inputs)
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


def _bad_reference(term: Path, node_id: str, nodes: dict, ancestors: dict[str, set[str]],
                   inputs: set[str]) -> str | None:
    head, rest = term.head, term.segments[1:]
    if head == "$nodes":
        if not rest:
            return "'$nodes' needs a node id ($nodes.<id>.result…)."
        head = str(rest[0])
    elif head == "$inputs":
        if rest and str(rest[0]) not in inputs:
            return f"input {rest[0]!r} is not declared in inputSchema."
        return None
    elif head.startswith("$"):
        if head not in NAMESPACES:
            return f"unknown namespace {head!r}; known: {', '.join(sorted(NAMESPACES))}."
        return None
    if head not in nodes:
        return f"unknown node {head!r}."
    if head not in ancestors.get(node_id, ()):
        return (f"node {head!r} is not an ancestor of {node_id!r}; "
                "only ancestors have results to read.")
    return None


def _check_inputs(definition: dict, payload: Any, problems: Invalid) -> None:
    """``payload`` against ``inputSchema`` (400230)."""
    if not isinstance(payload, dict):
        return  # already reported as not an object
    for item in definition.get("inputSchema", []):
        if "key" not in item or item.get("type") not in JSON_TYPES:
            continue  # an ill-formed item is reported under definition.inputSchema
        key, where = item["key"], f"payload.{location_key(item['key'])}"
        if key not in payload:
            if item.get("required"):
                problems.add(where, "Missing required input.", errors.INVALID_PAYLOAD)
            continue
        value, kind = payload[key], item["type"]
        ok = isinstance(value, JSON_TYPES[kind]) and not (
            kind == "number" and isinstance(value, bool))
        if not ok:
            problems.add(where, f"Must be of type {kind}.", errors.INVALID_PAYLOAD)
