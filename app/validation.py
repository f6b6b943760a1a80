"""Every "is this request acceptable" rule of SPEC §1–§2, before anything runs.

``check_request(body, limits)`` returns a ``RunRequest`` (the checked plan the
engine runs, and the request's own values) or raises ``Invalid`` with every
problem found, each under its location as a flat path
(``definition.nodes.check.children[1]``) and with its error code. The checks
inside node payloads (literal values, expressions) are app/payload_checks.py.
"""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import orjson
from marshmallow import Schema, ValidationError

from . import graph
from .bodies import LOOP, Bodies, find_bodies
from .dialect import iter_flat, load, location_key
from .nodes import NODE_TYPES, REJECTED_IN_SYNC
from .payload_checks import check_payloads
from .plan import Limits, Plan, PlanNode, RunRequest
from .problems import (
    INVALID_DEFINITION,
    INVALID_PAYLOAD,
    INVALID_RUN_ID,
    ROOT_NOT_MANUAL,
    Invalid,
    closest,
    did_you_mean,
)
from .redact import definition_values
from .schemas import (
    NODE_ID,
    DefinitionSchema,
    NodeSchema,
    RunRequestSchema,
    ValidateRequestSchema,
)

JSON_TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,),
              "object": (dict,), "array": (list,)}
# The code of a problem with a top-level field; any other field (unknown ones too,
# whatever they are called: "payload.x", "_schema") is an invalid definition.
FIELD_CODES = {"payload": INVALID_PAYLOAD, "propValues": INVALID_PAYLOAD,
               "runId": INVALID_RUN_ID}


def check_request(body: dict, limits: Limits, validate_only: bool = False) -> RunRequest:
    """The checked run request, or ``Invalid`` listing every problem."""
    schema = ValidateRequestSchema if validate_only else RunRequestSchema
    # Most requests are valid and send a definition checked before: taken here without
    # the list of problems (making one costs as much as these lookups), by the rules of
    # ``_checked_request`` (timeoutMs's bounds are written in both; tests/test_validation
    # holds them together). Any other goes the whole way, which lists every problem.
    try:
        request = load(schema, body)
    except ValidationError:
        pass
    else:
        timeout = request.get("timeoutMs")
        found = _cached_plan(request["definition"], limits)
        if found is not None and (timeout is None or 1 <= timeout <= limits.run_deadline_ms
                                  ) and next(_input_problems(found[0], request["payload"]),
                                             None) is None:
            return RunRequest(found[1], request["payload"], request["propValues"],
                              request.get("runId"), timeout)
    return _checked_request(schema, body, limits)


def _checked_request(schema: type[Schema], body: dict, limits: Limits) -> RunRequest:
    """``check_request``'s whole way: every problem found, in the order they are listed."""
    problems = Invalid(limits.max_problems)
    request = _load_request(schema, body, problems)
    timeout = request.get("timeoutMs")
    if timeout is not None and not 1 <= timeout <= limits.run_deadline_ms:
        problems.add("timeoutMs", f"Must be between 1 and {limits.run_deadline_ms}.")
    plan = None
    if "definition" in request:
        definition, plan = _checked_definition(request["definition"], limits, problems)
        problems.extend(_input_problems(definition, request.get("payload", {})),
                        INVALID_PAYLOAD)
    if problems.errors:
        raise problems
    return RunRequest(plan, request["payload"], request["propValues"],
                      run_id=request.get("runId"), timeout_ms=timeout)


# Checked definitions, by their JSON text: clients send the same definition again
# and again, and checking one costs more than running it. Only definitions whose text
# is at most CACHEABLE_CHARS long are kept, so the cache holds at most a few MiB.
CACHEABLE_CHARS = 64 * 1024
PLAN_CACHE_SIZE = 256
# (text, *limits' values) → (definition, plan)
_plans: OrderedDict[tuple, tuple[dict, Plan]] = OrderedDict()
_plans_lock = threading.Lock()


def _cache_key_text(definition: dict) -> bytes | str:
    """A definition's JSON text, one per value: orjson's bytes (a twentieth of json's
    cost), else — a number beyond 64 bits, a lone surrogate — json's text (a str: the
    two kinds of key never meet)."""
    try:
        return orjson.dumps(definition)
    except TypeError:  # (orjson.JSONEncodeError)
        return json.dumps(definition, separators=(",", ":"), default=str)


def _plan_key(raw: Any, limits: Limits) -> tuple | None:
    """The plan cache's key of a definition (None: not kept, too long or not an object)."""
    if not isinstance(raw, dict):
        return None
    text = _cache_key_text(raw)
    if len(text) > CACHEABLE_CHARS:
        return None
    # The limits' values rather than the dataclass: hashed and compared in C.
    return (text, *limits.__dict__.values())


def _cached_plan(raw: Any, limits: Limits) -> tuple[dict, Plan] | None:
    """The loaded definition and plan of ``raw`` checked before, if cached."""
    key = _plan_key(raw, limits)
    if key is None:
        return None
    with _plans_lock:
        found = _plans.get(key)
        if found is not None:
            _plans.move_to_end(key)
        return found


def _checked_definition(raw: Any, limits: Limits, problems: Invalid
                        ) -> tuple[dict, Plan | None]:
    """The loaded definition and its plan (None if invalid); seen before, from the cache."""
    found = _cached_plan(raw, limits)
    if found is not None:
        return found
    definition = _load(DefinitionSchema, raw, "definition", problems)
    if not isinstance(definition.get("nodes"), dict):
        return definition, None
    plan = _check_definition(definition, limits, problems)
    key = _plan_key(raw, limits)
    if plan is not None and key is not None and not problems.errors:
        with _plans_lock:
            _plans[key] = definition, plan
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
                            FIELD_CODES.get(key, INVALID_DEFINITION))
        return error.valid_data if isinstance(error.valid_data, dict) else {}


def _load(schema: type[Schema], data: Any, prefix: str, problems: Invalid) -> dict:
    """``data`` loaded; each problem located under ``prefix``."""
    try:
        return load(schema, data)
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
        node = _load(NodeSchema, raw, where, problems)
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
    bodies = find_bodies(nodes, edges, problems)
    if bodies is None:
        return None
    levels = bodies.levels
    sane = len(nodes) <= limits.max_nodes  # some checks are quadratic: only for sane sizes
    cut_off = _cut_off(nodes, bodies, problems) if sane else frozenset()
    for node_id in nodes:
        if node_id not in levels and node_id not in cut_off:
            problems.add(f"definition.nodes.{node_id}", "Not reachable from root.")
    parents = graph.parents_of(edges)
    _check_branches(nodes, parents, problems)
    _check_loop_fields(nodes, problems)
    if sane:
        check_payloads(definition, nodes, bodies, graph.ancestors(bodies.edges), problems,
                       cut_off)
    if problems.errors:
        return None
    position = {node_id: i for i, node_id in enumerate(nodes)}
    top = sorted((n for n in nodes if bodies.owner[n] is None),
                 key=lambda n: (levels[n], position[n]))
    in_bodies = [n for members in bodies.members.values() for n in members]
    return Plan(
        nodes=MappingProxyType({n: _plan_node(n, nodes[n], parents[n], levels[n], bodies)
                                for n in (*top, *in_bodies)}),
        top=tuple(top),
        props=definition["props"],
        input_keys=frozenset(item["key"] for item in definition["inputSchema"]),
        variables={v["name"]: v["default"] for v in definition["variableDefs"]},
        sensitive_prop_keys=tuple(definition["sensitivePropKeys"]),
        secrets=tuple(definition_values(definition)))


def _plan_node(node_id: str, node: dict, parents: list[str], level: int,
               bodies: Bodies) -> PlanNode:
    return PlanNode(
        id=node_id, type=node["type"], node_type=NODE_TYPES[node["type"]],
        payload=node["payload"], children=tuple(node["children"]), parents=tuple(parents),
        level=level,
        branch=node.get("branch"), continue_on_error=node["continueOnError"],
        timeout_ms=node.get("timeoutMs"), retry=node.get("retry"),
        loop=bodies.owner[node_id], body=tuple(bodies.members.get(node_id, ())),
        entries=tuple(node.get("loopBody", ())) if node["type"] == "for-each" else (),
        depth=bodies.depth.get(node_id, 0))


# What a for-each node refuses, and why: its time and retries are its body nodes'.
LOOP_REFUSES = {
    "timeoutMs": "Not allowed on a for-each node: a loop runs until its iterations end, "
                 "within the run deadline; give its body nodes their own timeoutMs.",
    "retry": "Not allowed on a for-each node: give its body nodes their own retry.",
}


def _check_loop_fields(nodes: dict, problems: Invalid) -> None:
    for node_id, node in nodes.items():
        if node.get("type") == "for-each":
            for key, why in LOOP_REFUSES.items():
                if key in node:
                    problems.add(f"definition.nodes.{location_key(node_id)}.{key}", why)


def _check_type(node_id: str, node: dict, problems: Invalid) -> None:
    kind, where = node.get("type"), f"definition.nodes.{location_key(node_id)}.type"
    if kind is None:
        return  # already reported by the schema
    if node_id == "root":
        if kind != "manual":
            problems.add(where, f"The root node must be of type 'manual', not {kind!r}.",
                         ROOT_NOT_MANUAL)
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
                hint = did_you_mean(child, nodes) if problems.may_hint() else ""
                problems.add(where, f"Unknown node {_quoted(child)}.{hint}")
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


def _cut_off(nodes: dict, bodies: Bodies, problems: Invalid) -> frozenset[str]:
    """The nodes not reachable from root only because a child id is unknown.

    A misspelt id in ``children`` (or ``loopBody``) cuts off the node it meant and
    every node below that one: reporting each of them as not reachable would bury the
    one error that matters. The node meant is taken to be one that no node lists and
    root does not reach: the closest to the unknown id by name, or the only one if it
    is the only one left. That node and the nodes it leads to are not reported, and
    the unknown ids they list are followed the same way. Only unknown ids listed by a
    node that root reaches (or that is cut off, so will be reached) count: an id listed
    by a node nobody reaches rescues nothing. A node left out beside a misspelling is
    still reported, unless it is the only candidate, where a node renamed without
    its parent's list (``orders`` → ``fetch_orders``) is the likelier story.
    """
    levels, edges = bodies.levels, bodies.edges
    if len(levels) == len(nodes):
        return frozenset()  # every node reachable
    listed = {child for children in edges.values() for child in children}
    candidates = [n for n in nodes if n not in levels and n not in listed]
    cut: set[str] = set()
    todo = [unknown for node_id in levels for unknown in _unknown_ids(nodes[node_id], nodes)]
    while todo and candidates:
        unknown = todo.pop()
        meant = closest(unknown, candidates) if problems.may_hint() else None
        if meant is None and len(candidates) == 1:
            meant = candidates[0]
        if meant is None:
            continue
        candidates.remove(meant)
        for node_id in graph.reachable(edges, meant):
            if node_id not in levels and node_id not in cut:
                cut.add(node_id)
                todo.extend(_unknown_ids(nodes[node_id], nodes))
    return frozenset(cut)


def _unknown_ids(node: dict, nodes: dict) -> list[str]:
    """The ids a node lists in ``children`` (and a loop in ``loopBody``) that name no node."""
    listed = [*node["children"], *(node.get("loopBody") or () if node.get("type") == LOOP
                                   else ())]
    return [node_id for node_id in listed if node_id not in nodes]


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


def _input_problems(definition: dict, payload: Any) -> Iterator[tuple[str, str]]:
    """``payload`` against ``inputSchema`` (400230): each problem's location and message."""
    if not isinstance(payload, dict):
        return  # already reported as not an object
    for item in definition.get("inputSchema", []):
        if "key" not in item or item.get("type") not in JSON_TYPES:
            continue  # an ill-formed item is reported under definition.inputSchema
        key, where = item["key"], f"payload.{location_key(item['key'])}"
        if key not in payload:
            if item.get("required"):
                yield where, "Missing required input."
            continue
        value, kind = payload[key], item["type"]
        ok = isinstance(value, JSON_TYPES[kind]) and not (
            kind == "number" and isinstance(value, bool))
        if not ok:
            yield where, f"Must be of type {kind}."
