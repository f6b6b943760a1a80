"""Which nodes belong to which loop (SPEC §11), checked before anything runs.

A ``for-each`` node's body is the nodes reachable from its ``loopBody`` entries
through ``children``. A body is a graph of its own, entered once per item: a
body node is reached only from its loop (no node outside the body lists it as
a child), so its children stay in the body too, and a node belongs to one loop
(the innermost, when loops nest). Loops nest at most ``MAX_DEPTH`` deep.

``find_bodies`` reports every problem at its location and returns what the
rest of validation and the plan need: each node's loop, each loop's members
and depth, and the levels of every node reachable from root.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from . import graph
from .dialect import location_key
from .loops import MAX_DEPTH
from .problems import Invalid, did_you_mean

LOOP = "for-each"


@dataclass(frozen=True)
class Bodies:
    owner: Mapping[str, str | None]  # node id → the loop whose body holds it; None: none
    members: Mapping[str, list[str]]  # loop id → the nodes it holds directly, in order
    depth: Mapping[str, int]  # loop id → how deep it nests (1: not inside another loop)
    levels: Mapping[str, int]  # node id → longest path from root (entries one below
    #                            their loop); only nodes reachable from root
    edges: Mapping[str, list[str]]  # children and loopBody edges together

    def loops_around(self, node_id: str) -> list[str]:
        """The loops whose bodies hold ``node_id``, innermost first."""
        out, loop = [], self.owner.get(node_id)
        while loop is not None:
            out.append(loop)
            loop = self.owner.get(loop)
        return out


def find_bodies(nodes: Mapping[str, dict], edges: Mapping[str, list[str]],
                problems: Invalid) -> Bodies | None:
    """Each loop's body, every problem with it reported; None when the graph with its
    loops is unusable (a loop that leads back to itself)."""
    entries = {node_id: _entries(node_id, node, nodes, problems)
               for node_id, node in nodes.items() if node.get("type") == LOOP}
    for node_id, node in nodes.items():
        if "loopBody" in node and node.get("type") != LOOP:
            problems.add(f"{_where(node_id)}.loopBody", "Only allowed on a for-each node.")
    bodies = {loop: _closure(loop, entries, edges, problems) for loop in entries}
    owner: dict[str, str | None] = dict.fromkeys(nodes)
    holders: dict[str, list[str]] = {}
    for loop, body in bodies.items():
        for node_id in body:
            holders.setdefault(node_id, []).append(loop)
    for node_id, loops in holders.items():
        loops.sort(key=lambda loop: len(bodies[loop]), reverse=True)  # outermost first
        for outer, inner in itertools.pairwise(loops):
            if inner not in bodies[outer]:
                problems.add(_where(node_id), f"Node {node_id!r} is in the bodies of loops "
                             f"{outer!r} and {inner!r}, neither inside the other; a node "
                             "belongs to one loop.")
                break
        owner[node_id] = loops[-1]
    for loop, body in bodies.items():
        for other in bodies:
            if other != loop and other in body and loop in bodies[other]:
                problems.add(_where(loop), f"Loops {loop!r} and {other!r} hold each other.")
                return None
    all_edges = {n: [*edges.get(n, ()), *entries.get(n, ())] for n in nodes}
    cycle = graph.find_cycle(all_edges)
    if cycle:
        return None  # a body leading back to its loop: reported by _closure
    depth = {}
    for loop in bodies:
        depth[loop] = 1 + sum(loop in body for body in bodies.values())
        if depth[loop] > MAX_DEPTH:
            problems.add(f"{_where(loop)}.loopBody", f"Loops nest at most {MAX_DEPTH} deep; "
                         f"this one is {depth[loop]} deep.")
    _check_edges_stay(nodes, edges, owner, bodies, problems)
    levels = graph.levels(all_edges, "root") if "root" in nodes else {}
    position = {node_id: i for i, node_id in enumerate(nodes)}
    members: dict[str, list[str]] = {loop: [] for loop in bodies}
    for node_id in sorted(levels, key=lambda n: (levels[n], position[n])):
        if owner[node_id] is not None:
            members[owner[node_id]].append(node_id)
    return Bodies(owner, members, depth, levels, all_edges)


def _entries(loop: str, node: dict, nodes: Mapping[str, dict], problems: Invalid
             ) -> list[str]:
    """The loop's valid ``loopBody`` entries, each problem reported at its place."""
    listed = node.get("loopBody")
    if not listed:
        problems.add(f"{_where(loop)}.loopBody", "Required on a for-each node: the ids of "
                     "its body's entry nodes (at least one).")
        return []
    found: list[str] = []
    for i, entry in enumerate(listed):
        where = f"{_where(loop)}.loopBody[{i}]"
        if entry == loop:
            problems.add(where, "A loop cannot be in its own body.")
        elif entry == "root":
            problems.add(where, "The root node cannot be in a loop's body.")
        elif entry not in nodes:
            hint = did_you_mean(entry, nodes) if problems.may_hint() else ""
            problems.add(where, f"Unknown node {_quoted(entry)}.{hint}")
        elif entry in found:
            problems.add(where, f"Node {_quoted(entry)} is listed twice.")
        else:
            found.append(entry)
    return found


def _closure(loop: str, entries: Mapping[str, list[str]], edges: Mapping[str, list[str]],
             problems: Invalid) -> set[str]:
    """The nodes reachable from the loop's entries through ``children`` and the
    ``loopBody`` of loops inside (so a body holds the bodies of the loops in it); a body
    node that leads back to its loop is reported there (and not followed)."""
    body, todo = set(entries[loop]), list(entries[loop])
    while todo:
        node_id = todo.pop()
        for child in entries.get(node_id, ()):  # a loop in the body: its body too
            if child not in body and child != loop:
                body.add(child)
                todo.append(child)
        for i, child in enumerate(edges.get(node_id, ())):
            if child == loop:
                problems.add(f"{_where(node_id)}.children[{i}]", f"Node {loop!r} is the loop "
                             f"whose body holds {node_id!r}; a body cannot lead back to its "
                             "loop.")
            elif child not in body and child != "root":
                body.add(child)
                todo.append(child)
    return body


def _check_edges_stay(nodes: Mapping[str, dict], edges: Mapping[str, list[str]],
                      owner: Mapping[str, str | None], bodies: Mapping[str, set[str]],
                      problems: Invalid) -> None:
    """A node in a loop's body is listed as a child only by nodes of that same body."""
    for node_id in nodes:
        for i, child in enumerate(edges.get(node_id, ())):
            loop = owner.get(child)
            if loop is None or owner.get(node_id) == loop:
                continue
            through = next((p for p in bodies[loop] if child in edges.get(p, ())), None)
            how = f"through {through!r}" if through else "as an entry of its loopBody"
            problems.add(f"{_where(node_id)}.children[{i}]", (
                f"Node {child!r} is in the body of loop {loop!r} ({how}); only that loop "
                "reaches it, so no node outside the body can list it as a child, and a body "
                "node's children stay in the body."))


def _where(node_id: str) -> str:
    return f"definition.nodes.{location_key(node_id)}"


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "…"
