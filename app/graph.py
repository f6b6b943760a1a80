"""Pure graph helpers over ``{node_id: [child_id, …]}`` mappings."""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

Edges = Mapping[str, Sequence[str]]


def parents_of(edges: Edges) -> dict[str, list[str]]:
    """Invert ``edges``: each node's parents, in the order the edges are met."""
    parents: dict[str, list[str]] = {node: [] for node in edges}
    for node, children in edges.items():
        for child in children:
            if child in parents:
                parents[child].append(node)
    return parents


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle as ``[a, b, …, a]``, or None when the graph is acyclic."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(edges, WHITE)
    for start in edges:
        if colour[start] != WHITE:
            continue
        # Iterative DFS: the stack holds (node, iterator over its children).
        path, stack = [start], [(start, iter(edges[start]))]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c in colour), None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour[child] == GREY:
                return [*path[path.index(child):], child]
            elif colour[child] == WHITE:
                colour[child] = GREY
                path.append(child)
                stack.append((child, iter(edges[child])))
    return None


def reachable(edges: Edges, start: str) -> set[str]:
    """Every node reachable from ``start`` (itself included)."""
    seen, todo = {start}, [start]
    while todo:
        for child in edges.get(todo.pop(), ()):
            if child in edges and child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def levels(edges: Edges, root: str) -> dict[str, int]:
    """Longest-path distance from ``root`` for each reachable node (acyclic graphs)."""
    nodes = reachable(edges, root)
    parents = parents_of({n: [c for c in edges[n] if c in nodes] for n in nodes})
    waiting = {n: len(parents[n]) for n in nodes}
    level = {root: 0}
    ready = [root]
    while ready:
        node = ready.pop()
        for child in edges[node]:
            if child not in nodes:
                continue
            level[child] = max(level.get(child, 0), level[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return level


def ancestors(edges: Edges) -> dict[str, set[str]]:
    """Each node's ancestors (acyclic graphs)."""
    parents = parents_of(edges)
    memo: dict[str, set[str]] = {}
    for node in topological(edges):
        found: set[str] = set()
        for parent in parents[node]:
            found.add(parent)
            found |= memo[parent]
        memo[node] = found
    return memo


def topological(edges: Edges) -> list[str]:
    """Kahn's order of an acyclic graph, ties broken by position in ``edges``."""
    parents = parents_of(edges)
    waiting = {n: len(p) for n, p in parents.items()}
    names = list(edges)  # position → node
    position = {n: i for i, n in enumerate(names)}
    ready = [position[n] for n, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = names[heapq.heappop(ready)]
        order.append(node)
        for child in edges[node]:
            if child in waiting:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, position[child])
    return order
