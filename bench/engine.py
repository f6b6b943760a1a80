"""Engine benchmarks, measured side by side in one run (``make bench``).

1. Overhead: 20-node DAGs of no-op nodes (chain, fan-out/fan-in, diamond
   lattice) through our engine and through Dask's threaded scheduler
   (``dask.threaded.get``) on the same graph. Medians per run, and the ratio
   (issue 18's goal: the pooled path at most 0.5 × Dask on every shape).
2. Schedule quality: skewed ``delay`` nodes where waiting for whole levels is
   slow. Our makespan against the critical path and a level-by-level schedule
   (run each level on a thread pool and wait for all of it) of the same sleeps.
3. Loop overhead (SPEC §11): a ``for-each`` of 100 items over a 5-node body of
   inline no-ops against the same 500 nodes unrolled under root, and Dask on the
   unrolled graph; the loop's cost per body instance over the unrolled run.
4. Loop concurrency: 100 items × one 50 ms ``delay`` at ``concurrency: 10``
   against the ideal 10 rounds of 50 ms, and Dask running the 100 sleeps on 10
   threads.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.threaded

from app import graph
from app.engine import Run
from app.nodes import NODE_TYPES
from app.nodes.base import NodeType, PayloadSchema
from app.validation import Limits, check_request

REPEAT = 2000
LOOP_REPEAT = 200  # a 500-node run takes milliseconds
ITEMS = 100


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


def request_for(edges: dict[str, list[str]], node_type: str, payloads=None,
                limits: Limits | None = None):
    nodes = {n: {"type": "manual" if n == "root" else node_type, "children": children,
                 "payload": (payloads or {}).get(n, {})} for n, children in edges.items()}
    return check_request({"definition": {"nodes": nodes}}, limits or Limits())


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


POOLED_GOAL = 0.5  # pooled / Dask, on every shape (issue 18)


def overhead() -> None:
    print(f"\nEngine overhead: 20 no-op nodes, median of {REPEAT} runs (ms); goal pooled / "
          f"Dask ≤ {POOLED_GOAL}\n")
    print("| shape | ours, inline | ours, pooled | Dask threaded | pooled / Dask | goal |")
    print("|---|---:|---:|---:|---:|---|")
    for name, edges in shapes().items():
        inline, pooled = request_for(edges, "noop"), request_for(edges, "noop-pooled")
        keys, dsk = list(edges), dask_graph(edges)
        ours_inline = median_ms(lambda p=inline: Run(p, "run_bench").run())
        ours_pooled = median_ms(lambda p=pooled: Run(p, "run_bench").run())
        theirs = median_ms(lambda d=dsk, k=keys: dask.threaded.get(d, k))
        ratio = ours_pooled / theirs
        print(f"| {name} | {ours_inline:.3f} | {ours_pooled:.3f} | {theirs:.3f} | "
              f"{ratio:.2f} | {'met' if ratio <= POOLED_GOAL else 'missed'} |")


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


def loop_bodies() -> dict[str, dict[str, list[str]]]:
    """Two 5-node loop bodies as ``{node: [children]}``."""
    return {"chain": {"a": ["b"], "b": ["c"], "c": ["d"], "d": ["e"], "e": []},
            "diamond": {"a": ["b", "c", "d"], "b": ["e"], "c": ["e"], "d": ["e"], "e": []}}


def loop_request(body: dict[str, list[str]], node_type: str, concurrency: int,
                 payloads=None, timeout_ms: int | None = None):
    """root → a for-each over ``ITEMS`` items whose body is ``body``."""
    inner = {c for children in body.values() for c in children}
    nodes = {"root": {"type": "manual", "children": ["each"]},
             "each": {"type": "for-each", "loopBody": [n for n in body if n not in inner],
                      "payload": {"array": list(range(ITEMS)), "concurrency": concurrency}},
             **{n: {"type": node_type, "children": children,
                    "payload": (payloads or {}).get(n, {})} for n, children in body.items()}}
    timeout = {"timeoutMs": timeout_ms} if timeout_ms else {}
    return check_request({"definition": {"nodes": nodes}, **timeout}, Limits())


def unrolled(body: dict[str, list[str]]) -> dict[str, list[str]]:
    """The body copied ``ITEMS`` times side by side under root, as plain nodes."""
    inner = {c for children in body.values() for c in children}
    edges = {"root": [f"{n}_{i}" for i in range(ITEMS) for n in body if n not in inner]}
    for i in range(ITEMS):
        edges.update({f"{n}_{i}": [f"{c}_{i}" for c in children]
                      for n, children in body.items()})
    return edges


def medians_ms(fns: dict[Any, Callable[[], object]], repeat: int,
               warm_up: int = 10) -> dict[Any, float]:
    """Median of each ``fn``, run in turn round after round so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warm_up):
            fn()
    samples: dict[Any, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) * 1000 for name, s in samples.items()}


def succeeds(request) -> None:
    outcome = Run(request, "run_bench").run()
    if outcome.status != "success":  # a failed run's time says nothing about overhead
        raise SystemExit(f"the benchmark's run failed: {outcome.error}")


def loop_overhead() -> None:
    print(f"\nLoop overhead: {ITEMS} items × a 5-node body of inline no-ops against the "
          f"same {ITEMS * 5} nodes unrolled under root, median of {LOOP_REPEAT} runs (ms); "
          f"per instance = (loop − unrolled) / {ITEMS * 5}, goal ≤ 20 µs\n")
    print("| body | unrolled | loop, concurrency 1 | loop, concurrency 10 | "
          "Dask threaded, unrolled | per instance, c 1 (µs) | per instance, c 10 (µs) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, body in loop_bodies().items():
        edges = unrolled(body)
        requests = {"flat": request_for(edges, "noop", limits=Limits(max_nodes=len(edges))),
                    **{c: loop_request(body, "noop", c) for c in (1, 10)}}
        for request in requests.values():
            succeeds(request)
        runs = {key: (lambda r=request: Run(r, "run_bench").run())
                for key, request in requests.items()}
        keys, dsk = list(edges), dask_graph(edges)
        runs["dask"] = lambda d=dsk, k=keys: dask.threaded.get(d, k)
        ms = medians_ms(runs, LOOP_REPEAT)
        per = {c: (ms[c] - ms["flat"]) * 1000 / (ITEMS * len(body)) for c in (1, 10)}
        print(f"| {name} | {ms['flat']:.2f} | {ms[1]:.2f} | {ms[10]:.2f} | {ms['dask']:.2f} | "
              f"{per[1]:.1f} | {per[10]:.1f} |")


DELAY_MS, CONCURRENCY = 50, 10
# Four times the goal: a loop that stalls costs 2 s a round, not the default 60 s.
LOOP_DEADLINE_MS = 2000


def loop_concurrency(rounds: int = 5) -> None:
    request = loop_request({"wait": []}, "delay", CONCURRENCY, {"wait": {"delayMs": DELAY_MS}},
                           timeout_ms=LOOP_DEADLINE_MS)
    dsk = {f"wait_{i}": (time.sleep, DELAY_MS / 1000) for i in range(ITEMS)}
    ends: list[str] = []

    def ours() -> None:
        outcome = Run(request, "run_bench").run()
        ends.append(outcome.error["code"] if outcome.error else outcome.status)

    ms = medians_ms({"ours": ours, "dask": lambda: dask.threaded.get(
        dsk, list(dsk), num_workers=CONCURRENCY)}, rounds, warm_up=0)
    ideal = ITEMS // CONCURRENCY * DELAY_MS
    print(f"\nLoop concurrency: {ITEMS} items × one {DELAY_MS} ms delay node, concurrency "
          f"{CONCURRENCY}, median of {rounds} runs (ms); goal within 10 % of {ideal}\n")
    print(f"| ideal ({ITEMS // CONCURRENCY} rounds of {DELAY_MS} ms) | ours | ours / ideal | "
          f"runs ended | Dask threaded, {CONCURRENCY} workers |")
    print("|---:|---:|---:|---|---:|")
    ended = ", ".join(f"{end} × {ends.count(end)}" for end in sorted(set(ends)))
    print(f"| {ideal} | {ms['ours']:.0f} | {ms['ours'] / ideal:.2f} | {ended} | "
          f"{ms['dask']:.0f} |")


def main() -> int:
    print(f"Python {sys.version.split()[0]}, dask {dask.__version__}")
    overhead()
    schedule_quality()
    loop_overhead()
    loop_concurrency()
    return 0


if __name__ == "__main__":
    sys.exit(main())
