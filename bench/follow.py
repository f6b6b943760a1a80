"""What a follower costs the run it follows: server CPU over a run, without and with one.

``python -m bench.follow`` (``make bench-http`` runs it after ``bench.http``): one
gunicorn (3 sync workers, the production gunicorn.conf.py, SQLite) runs two
workflows, each BENCH_ROUNDS times without a follower and as often with one
(``GET /v1/runs/<id>/stream`` from another worker, read to its end), alternating:

- busy: steady CPU work for a few seconds — a for-each loop over 100 items whose
  body runs a JavaScript loop of fixed length (``code-transform``), formats its
  output and filters the payload's items, so the partial state grows to about
  400 kB as a long loop's does;
- waiting: a 3-second ``delay``, nearly no CPU: what a follower costs by itself.

Over each run, from just before its request to just after its answer and the
follower's last event, it reads the CPU (user + system) of every worker's process
tree (a worker, its code-transform helpers) and of the master (with its reaped
children's). The worker that ran the run (the ``pid`` of its "run finished" log
line) has the run's CPU. Everything else — the master, idle workers, and the follower's worker —
is the rest, read in nanoseconds from the scheduler (``schedstat`` of each thread;
``stat`` counts 10 ms ticks, as much as the whole cost measured); the follower's cost
is the rest with a follower less the median rest without one. That split is what
makes a cost of about 1 % measurable: the run's own CPU varies by several per cent
from run to run on a shared machine, the rest by a millisecond. The whole tree's
difference is printed too, for comparison.

The verdict is the busy run's median follower cost as a share of its median CPU
without a follower (goal: at most 1 %); the waiting run gives the follower's cost
per second followed when there is next to nothing to read.

``BENCH_BASELINE=<git revision>`` measures a second server running that revision's
code (checked out into a temporary worktree) in the same rounds, for a before/after.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.server import Server, process_tree, tree_cpu

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
GOAL = 0.01  # a follower's CPU: at most 1 % of the run's
WORKERS = 3  # one runs, one follows, one is spare
SETTLE_S = 0.3  # after the answer and the follower's end, before the CPU is read
ITEMS = 100  # the loop's items (the most a for-each takes)
JS_STEPS = 800_000  # steps of each iteration's JavaScript loop: 20–30 ms of CPU here
WAIT_MS = 3000
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer dev-token"}
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def busy() -> dict:
    """2–3.5 s of CPU over 2.5–5 s here: each item's JavaScript loop, its line, a filter."""
    code = ("function transform(x) { let s = 0; "
            f"for (let i = 0; i < {JS_STEPS}; i++) s = (s + i * x.n) % 1000003; "
            "return {n: x.n, s: s}; }")
    return {"definition": {"nodes": {
        "root": {"type": "manual", "children": ["each"]},
        "each": {"type": "for-each", "payload": {"array": "{{root.result.items}}"},
                 "loopBody": ["calc"], "children": ["done"]},
        "calc": {"type": "code-transform", "children": ["line"],
                 "payload": {"input": "{{$item}}", "code": code}},
        "line": {"type": "format", "children": ["keep"], "payload": {
            "data": "{{calc.result.output}}", "template": "{{@n}}: {{@s}}"}},
        "keep": {"type": "filter", "payload": {"array": "{{root.result.items}}",
                                               "filter": {"n": {"$lt": 3}}}},
        "done": {"type": "log", "payload": {"message": "{{each.result.iterationCount}} items"}},
    }}, "payload": {"items": [{"n": n, "name": f"item {n}"} for n in range(ITEMS)]}}


def waiting() -> dict:
    return {"definition": {"nodes": {
        "root": {"type": "manual", "children": ["wait"]},
        "wait": {"type": "delay", "payload": {"delayMs": WAIT_MS}},
    }}}


WORKFLOWS = {"busy": busy(), "waiting": waiting()}


@dataclass
class Measured:
    """One run: its wall time, the CPU seconds of the worker that ran it, of the rest
    of the server, and of the whole tree; the follower's events (None: no follower)."""

    seconds: float
    run: float
    rest: float
    tree: float
    events: int | None


def threads_cpu(pid: int) -> float:
    """CPU seconds so far of the live threads of ``pid``, to the nanosecond."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread gone meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def cpu(server: Server) -> dict[int, tuple[float, float]]:
    """CPU seconds so far of each worker (by pid) and of the master: ``(its process
    tree's, its own threads')`` — the tree holds a worker's code-transform helpers, the
    master's reaped children; its threads are read to the nanosecond."""
    master = server.process.pid
    found = {pid: (tree_cpu(process_tree(pid)), threads_cpu(pid))
             for pid in server.worker_pids()}
    found[master] = (tree_cpu([master]), threads_cpu(master))
    return found


def post(server: Server, body: dict, answers: list) -> None:
    request = urllib.request.Request(server.base + "/v1/runs/sync", headers=HEADERS,
                                     data=json.dumps(body).encode())
    with _direct.open(request, timeout=120) as response:
        answers.append(json.loads(response.read())["status"])


def follow(server: Server, run_id: str) -> int:
    """Follow the run to its end (waiting for it to be stored first); its events."""
    request = urllib.request.Request(server.base + f"/v1/runs/{run_id}/stream",
                                     headers=HEADERS)
    while True:
        try:
            with _direct.open(request, timeout=120) as response:
                text = response.read().decode()
            break
        except urllib.error.HTTPError as error:
            if error.code != 404:  # not stored yet
                raise
            time.sleep(0.05)
    events = [block for block in text.split("\n\n") if "\nevent: " in block]
    if "event: run.finished" not in events[-1]:
        raise RuntimeError(f"the stream ended with {events[-1]!r}")
    return len(events)


def runner_pid(server: Server, run_id: str) -> int:
    """The worker that ran ``run_id``, from its log line."""
    for line in (server.workdir / "app.log").read_text().splitlines():
        record = json.loads(line)
        if record.get("runId") == run_id and record["message"] == "run finished":
            return record["pid"]
    raise RuntimeError(f"{run_id} was not logged")


def measure(server: Server, workflow: str, run_id: str, followed: bool) -> Measured:
    answers: list[str] = []
    before = cpu(server)
    started = time.monotonic()
    running = threading.Thread(target=post, args=(
        server, {"runId": run_id, **WORKFLOWS[workflow]}, answers))
    running.start()
    events = None
    if followed:
        time.sleep(0.2)  # the run is stored by then, most of the time
        events = follow(server, run_id)
    running.join()
    seconds = time.monotonic() - started
    time.sleep(SETTLE_S)
    after = cpu(server)
    if answers != ["success"]:
        raise RuntimeError(f"the run ended {answers!r}")
    if set(after) != set(before):
        raise RuntimeError("a worker was replaced during the run: its CPU is not comparable")
    grown = {pid: after[pid][0] - before[pid][0] for pid in before}
    runner = runner_pid(server, run_id)
    rest = sum(after[pid][1] - before[pid][1] for pid in before if pid != runner)
    return Measured(seconds, grown[runner], rest, sum(grown.values()), events)


def serve(workdir: Path, root: Path | None = None) -> Server:
    workdir.mkdir()
    server = Server(workdir, workers=WORKERS, MAX_CONCURRENT_RUNS="0",
                    LOG_FILE=str(workdir / "app.log"), **({"root": root} if root else {}))
    server.flask("token", "seed-dev")
    return server.start()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers = {"this tree": serve(Path(tmp) / "this")}
        stack.callback(servers["this tree"].stop)
        baseline = os.environ.get("BENCH_BASELINE")
        if baseline:
            tree = Path(tmp) / "baseline-tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), baseline],
                           check=True, capture_output=True)
            stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
            servers[baseline] = serve(Path(tmp) / "baseline", root=tree)
            stack.callback(servers[baseline].stop)
        for server in servers.values():  # helpers started, caches warm
            measure(server, "busy", "run_warm_up", followed=True)
        pairs: dict[tuple[str, str], list[tuple[Measured, Measured]]] = {
            (workflow, name): [] for workflow in WORKFLOWS for name in servers}
        for number in range(ROUNDS):
            order = (False, True) if number % 2 == 0 else (True, False)
            for workflow, name in pairs:
                pair = {followed: measure(servers[name], workflow,
                                          f"run_{workflow}_{number}_{int(followed)}", followed)
                        for followed in order}
                pairs[workflow, name].append((pair[False], pair[True]))
    for (workflow, name), measured in pairs.items():
        report(f"{workflow}, {name}", measured, judged=workflow == "busy")
    return 0


def report(title: str, pairs: list[tuple[Measured, Measured]], judged: bool) -> None:
    print(f"\nfollowing a run ({title}): {ROUNDS} runs without a follower and {ROUNDS} "
          f"with one, alternating; {WORKERS} sync workers, SQLite. CPU in ms (user + "
          "system); rest: the server's CPU outside the worker that ran the run\n")
    print("| round | run s | run CPU, alone | run CPU, followed | rest, alone "
          "| rest, followed | tree, alone | tree, followed | events |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for number, (alone, followed) in enumerate(pairs, start=1):
        print(f"| {number} | {alone.seconds:.2f} | {alone.run * 1000:.0f} | "
              f"{followed.run * 1000:.0f} | {alone.rest * 1000:.1f} | "
              f"{followed.rest * 1000:.1f} | {alone.tree * 1000:.0f} | "
              f"{followed.tree * 1000:.0f} | {followed.events} |")
    run = statistics.median(alone.run for alone, _ in pairs)
    rest = statistics.median(alone.rest for alone, _ in pairs)
    costs = [followed.rest - rest for _, followed in pairs]
    cost = statistics.median(costs)
    seconds = statistics.median(followed.seconds for _, followed in pairs)
    tree = (statistics.median(followed.tree for _, followed in pairs)
            - statistics.median(alone.tree for alone, _ in pairs))
    print(f"\nthe run's CPU (median, alone): {run * 1000:.0f} ms over "
          f"{statistics.median(alone.seconds for alone, _ in pairs):.2f} s; with a "
          f"follower: {statistics.median(f.run for _, f in pairs) * 1000:.0f} ms")
    print("the follower's CPU (rest followed − median rest alone) by round: "
          + ", ".join(f"{value * 1000:.1f}" for value in costs)
          + f" ms; median {cost * 1000:.1f} ms, {cost / seconds * 1000:.1f} ms per second "
          "followed")
    if judged:
        print(f"  as a share of the run's CPU: {cost / run:.2%}; goal: at most {GOAL:.0%}, "
              f"{'met' if cost / run <= GOAL else 'not met'}")
        print(f"the whole tree's difference (median followed − median alone): "
              f"{tree * 1000:.0f} ms ({tree / run:.1%} of the run's CPU; noisier)")


if __name__ == "__main__":
    sys.exit(main())
