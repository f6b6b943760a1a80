"""Engine benchmarks, measured side by side in one run (``make bench``).

1. Overhead: 20-node DAGs of no-op nodes (chain, fan-out/fan-in, diamond
   lattice) through our engine and through Dask's threaded scheduler
   (``dask.threaded.get``) on the same graph. Medians per run, and the ratio.
2. Schedule quality: skewed ``delay`` nodes where waiting for whole levels is
   slow. Our makespan against the critical path and a level-by-level schedule
   (run each level on a thread pool and wait for all of it) of the same sleeps.
"""
from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dask.threaded

from app import graph
from app.engine import Run
from app.nodes import NODE_TYPES
from app.nodes.base import NodeType, PayloadSchema
from app.validation import Limits, check_request

REPEAT = 2000


def _noop(data, ctx):
    return {}


# A no-op as a pure (inline) type and as one that runs on the pool, like a
# node type that can block (http-request, delay, code-transform).
NODE_TYPES["noop"] = NodeType("noop", PayloadSchema, _noop, result={}, inline=True)
NODE_TYPES["noop-pooled"] = NodeType("noop-pooled", PayloadSchema, _noop, result={})


def shapes() -> dict[str, dict[str, list[str]]]:
    """Three 20-node DAGs (root included) as ``{node: [children]}``."""
    chain = {"root": ["n1"], **{f"n{i}": [f"n{i + 1}"] for i in range(1, 19)}, "n19": []}
    fan = {"root": [f"w{i}" for i in range(18)], **{f"w{i}": ["join"] for i in range(18)},
           "join": []}
    # root → 6 layers of 3, each node feeding every node of the next layer → sink
    layers = [[f"d{layer}_{k}" for k in range(3)] for layer in range(6)]
    lattice = {"root": layers[0]}
    for this, nxt in zip(layers, [*layers[1:], ["sink"]], strict=True):
        lattice.update({node: list(nxt) for node in this})
    lattice["sink"] = []
    return {"chain": chain, "fan-out/fan-in": fan, "diamond lattice": lattice}


def request_for(edges: dict[str, list[str]], node_type: str, payloads=None):
    nodes = {n: {"type": "manual" if n == "root" else node_type, "children": children,
                 "payload": (payloads or {}).get(n, {})} for n, children in edges.items()}
    return check_request({"definition": {"nodes": nodes}}, Limits())


def median_ms(fn, repeat: int = REPEAT) -> float:
    for _ in range(50):  # warm-up: pool threads, caches
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def dask_graph(edges: dict[str, list[str]]) -> dict:
    parents = graph.parents_of(edges)
    return {n: (_dask_noop, *parents[n]) for n in edges}


def _dask_noop(*_parents):
    return None


def overhead() -> None:
    print(f"\nEngine overhead: 20 no-op nodes, median of {REPEAT} runs (ms)\n")
    print("| shape | ours, inline | ours, pooled | Dask threaded | pooled / Dask |")
    print("|---|---:|---:|---:|---:|")
    for name, edges in shapes().items():
        inline, pooled = request_for(edges, "noop"), request_for(edges, "noop-pooled")
        keys, dsk = list(edges), dask_graph(edges)
        ours_inline = median_ms(lambda p=inline: Run(p, "run_bench").run())
        ours_pooled = median_ms(lambda p=pooled: Run(p, "run_bench").run())
        theirs = median_ms(lambda d=dsk, k=keys: dask.threaded.get(d, k))
        print(f"| {name} | {ours_inline:.3f} | {ours_pooled:.3f} | {theirs:.3f} | "
              f"{ours_pooled / theirs:.2f} |")


def skewed() -> tuple[dict[str, list[str]], dict[str, int]]:
    """Three chains whose slow node sits at a different level in each."""
    durations = {"a1": 300, "a2": 10, "a3": 10, "b1": 10, "b2": 300, "b3": 10,
                 "c1": 10, "c2": 10, "c3": 300, "end": 10}
    edges = {"root": ["a1", "b1", "c1"], "a1": ["a2"], "a2": ["a3"], "b1": ["b2"], "b2": ["b3"],
             "c1": ["c2"], "c2": ["c3"], "a3": ["end"], "b3": ["end"], "c3": ["end"], "end": []}
    return edges, durations


def critical_path_ms(edges, durations) -> int:
    longest: dict[str, int] = {}
    for node in reversed(graph.topological(edges)):
        longest[node] = durations.get(node, 0) + max((longest[c] for c in edges[node]),
                                                     default=0)
    return longest["root"]


def level_by_level_ms(edges, durations) -> float:
    """Run each level on a pool and wait for all of it before the next."""
    levels = graph.levels(edges, "root")
    by_level: dict[int, list[str]] = {}
    for node, level in levels.items():
        by_level.setdefault(level, []).append(node)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(edges)) as pool:
        for level in sorted(by_level):
            list(pool.map(lambda n: time.sleep(durations.get(n, 0) / 1000), by_level[level]))
    return (time.perf_counter() - start) * 1000


def schedule_quality(rounds: int = 5) -> None:
    edges, durations = skewed()
    payloads = {n: {"delayMs": ms} for n, ms in durations.items()}
    request = request_for(edges, "delay", payloads)
    ours = statistics.median(Run(request, "run_bench").run().duration_ms
                             for _ in range(rounds))
    levels_measured = statistics.median(level_by_level_ms(edges, durations)
                                        for _ in range(rounds))
    levels_by_sum = sum(max(durations.get(n, 0) for n in level)
                        for level in request.plan.levels)
    critical = critical_path_ms(edges, durations)
    print(f"\nSchedule quality: skewed delay nodes (3 chains, slow node at levels 1/2/3), "
          f"median of {rounds} runs (ms)\n")
    print("| critical path | ours | level by level (measured) | level by level (sum of maxima) |")
    print("|---:|---:|---:|---:|")
    print(f"| {critical} | {ours:.0f} | {levels_measured:.0f} | {levels_by_sum} |")
    print(f"\nours − critical path = {ours - critical:.0f} ms")


def main() -> int:
    print(f"Python {sys.version.split()[0]}, dask {dask.__version__}")
    overhead()
    schedule_quality()
    return 0


if __name__ == "__main__":
    sys.exit(main())
