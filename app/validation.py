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
from types import ModuleType
from typing import Any

from marshmallow import Schema, ValidationError

from . import errors, graph
from .expressions import ExpressionError, Path, is_template, parse, references
from .nodes import NODE_TYPES, REJECTED_IN_SYNC
from .nodes.base import load, schema_of
from .plan import Limits, Plan, PlanNode
from .schemas import (
    NODE_ID,
    DefinitionSchema,
    NodeSchema,
    RunRequestSchema,
    ValidateRequestSchema,
    flatten,
)

NAMESPACES = {"$nodes", "$trigger", "$props", "$inputs", "$vars", "$run", "$workflow"}
JSON_TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,),
              "object": (dict,), "array": (list,)}


class Invalid(Exception):
    """Every problem of a request: ``errors`` path → messages, ``codes`` path → code."""

    def __init__(self):
        super().__init__("invalid request")
        self.errors: dict[str, list[str]] = {}
        self.codes: dict[str, int] = {}

    def add(self, path: str, message: str, code: int = errors.INVALID_DEFINITION) -> None:
        self.errors.setdefault(path, []).append(message)
        self.codes.setdefault(path, code)

    def extend(self, flat: dict[str, list[str]], code: int = errors.INVALID_DEFINITION
               ) -> None:
        for path, messages in flat.items():
            for message in messages:
                self.add(path, message, code)

    @property
    def code(self) -> int:
        present = set(self.codes.values())
        return next(c for c in errors.CODE_PRECEDENCE if c in present)


# The code of a problem with a top-level field; any other field (unknown ones too,
# whatever they are called: "payload.x", "_schema") is an invalid definition.
FIELD_CODES = {"payload": errors.INVALID_PAYLOAD, "propValues": errors.INVALID_PAYLOAD,
               "runId": errors.INVALID_RUN_ID}


def check_request(body: dict, limits: Limits, validate_only: bool = False) -> Plan:
    """The plan of a run request, or ``Invalid`` listing every problem."""
    problems = Invalid()
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
            problems.extend(flatten(messages, str(key)),
                            FIELD_CODES.get(key, errors.INVALID_DEFINITION))
        return error.valid_data if isinstance(error.valid_data, dict) else {}


def _load(schema: Schema, data: Any, prefix: str, problems: Invalid) -> dict:
    try:
        return schema.load(data)
    except ValidationError as error:
        problems.extend(flatten(error.messages, prefix))
        return error.valid_data if isinstance(error.valid_data, dict) else {}


def _check_definition(definition: dict, limits: Limits, problems: Invalid) -> Plan | None:
    raw_nodes = definition["nodes"]
    nodes = {}
    for node_id, raw in raw_nodes.items():
        where = f"definition.nodes.{node_id}"
        if not re.fullmatch(NODE_ID, node_id):
            problems.add(where, "Node ids must match ^[A-Za-z0-9_-]{1,64}$.")
        node = _load(schema_of(NodeSchema), raw, where, problems)
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
    return Plan({n: _plan_node(n, nodes[n], parents[n], levels[n]) for n in order}, definition)


def _plan_node(node_id: str, node: dict, parents: list[str], level: int) -> PlanNode:
    return PlanNode(
        id=node_id, type=node["type"], module=NODE_TYPES[node["type"]],
        payload=node["payload"], children=node["children"], parents=parents, level=level,
        branch=node.get("branch"), continue_on_error=node["continueOnError"],
        timeout_ms=node.get("timeoutMs"), retry=node.get("retry"))


def _check_type(node_id: str, node: dict, problems: Invalid) -> None:
    kind, where = node.get("type"), f"definition.nodes.{node_id}.type"
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
        known = ", ".join(sorted(t for t in NODE_TYPES if t != "manual"))
        problems.add(where, f"Unknown node type {kind!r}. Known types: {known}.")


def _check_edges(nodes: dict, problems: Invalid) -> dict[str, list[str]] | None:
    """Children exist, no self-loops or cycles; the edges, or None if unusable."""
    edges: dict[str, list[str]] = {}
    for node_id, node in nodes.items():
        edges[node_id] = []
        for i, child in enumerate(node["children"]):
            where = f"definition.nodes.{node_id}.children[{i}]"
            if child == node_id:
                problems.add(where, f"Node {node_id!r} lists itself as a child.")
            elif child not in nodes:
                problems.add(where, f"Unknown node {child!r}.")
            elif child in edges[node_id]:
                problems.add(where, f"Child {child!r} is listed twice.")
            else:
                edges[node_id].append(child)
    cycle = graph.find_cycle(edges)
    if cycle:
        problems.add(f"definition.nodes.{cycle[-2]}.children",
                     "Cycle: " + " → ".join(cycle) + ".")
        return None
    return edges if "root" in nodes else None


def _check_branches(nodes: dict, parents: dict[str, list[str]], problems: Invalid) -> None:
    for node_id, node in nodes.items():
        under_if = any(nodes[p].get("type") == "if" for p in parents[node_id])
        where = f"definition.nodes.{node_id}.branch"
        if under_if and "branch" not in node:
            problems.add(where, "Required on a child of an 'if' node ('then' or 'else').")
        elif not under_if and "branch" in node:
            problems.add(where, "Only allowed on a child of an 'if' node.")


def _check_payloads(definition: dict, nodes: dict, ancestors: dict[str, set[str]],
                    problems: Invalid) -> None:
    inputs = {item.get("key") for item in definition.get("inputSchema", [])}
    for node_id, node in nodes.items():
        module = NODE_TYPES.get(node.get("type"))
        if module is None or "payload" not in node or (
                node_id == "root" and node["type"] != "manual"):
            continue  # reported already: unknown type, or a root that is not manual
        where = f"definition.nodes.{node_id}.payload"
        payload = node["payload"]
        literal_errors = _literal_only(schema_of(module.Payload).validate(payload), payload)
        problems.extend(flatten(literal_errors, where), errors.INVALID_DEFINITION)
        for path, text in _expression_strings(payload, where, module):
            try:
                found = references(text)
            except ExpressionError as error:
                problems.add(path, str(error))
                continue
            for source, term in found:
                why = _bad_reference(term, node_id, nodes, ancestors, inputs)
                if why:
                    problems.add(path, f"{source}: {why}")


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


def _expression_strings(payload: dict, where: str, module: ModuleType
                        ) -> Iterator[tuple[str, str]]:
    """``(location, string)`` of each string that may hold holes, condition keys too."""
    condition_fields = getattr(module, "CONDITION_FIELDS", ())
    stack: list[tuple[str, Any, bool]] = [
        (f"{where}.{k}", v, k in condition_fields) for k, v in payload.items()]
    while stack:
        path, value, keys_too = stack.pop()
        if isinstance(value, str):
            if is_template(value):
                yield path, value
        elif isinstance(value, dict):
            for k, v in value.items():
                if keys_too and is_template(k):
                    yield f"{path}.{k}", k
                stack.append((f"{path}.{k}", v, keys_too))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v, keys_too) for i, v in enumerate(value))


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
        key, where = item["key"], f"payload.{item['key']}"
        if key not in payload:
            if item.get("required"):
                problems.add(where, "Missing required input.", errors.INVALID_PAYLOAD)
            continue
        value, kind = payload[key], item["type"]
        ok = isinstance(value, JSON_TYPES[kind]) and not (
            kind == "number" and isinstance(value, bool))
        if not ok:
            problems.add(where, f"Must be of type {kind}.", errors.INVALID_PAYLOAD)
