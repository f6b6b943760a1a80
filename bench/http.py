"""HTTP throughput, measured side by side in one run (``make bench-http``).

wrk drives (a) a 5-node workflow — root → two parallel transforms → join → log —
through the real service and (b) a bare Flask JSON endpoint, each served by
gunicorn with the production gunicorn.conf.py on 127.0.0.1, and prints
requests/s, p50/p99 latency, errors and the ratio.

Both servers run for the whole benchmark and wrk alternates between them for
BENCH_ROUNDS rounds: a shared machine's speed drifts by half within minutes, so
only a ratio of two measurements taken back to back means anything. The
verdict is the median of the rounds' ratios.

``BENCH_BASELINE=<git revision>`` adds a third server running that revision's
code (checked out into a temporary worktree) on the same workflow, for a
before/after comparison measured in the same rounds.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.server import Server

DURATION = os.environ.get("BENCH_SECONDS", "8")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
GOAL = 0.5  # the workflow should sustain half the bare endpoint's throughput
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
WORKFLOW = {
    "definition": {"nodes": {
        "root": {"type": "manual", "children": ["names", "lines"]},
        "names": {"type": "pluck", "children": ["join"],
                  "payload": {"array": "{{root.result.items}}", "field": "name"}},
        "lines": {"type": "format", "children": ["join"],
                  "payload": {"data": "{{root.result.items}}", "template": "{{@name}}={{@qty}}",
                              "separator": ","}},
        "join": {"type": "format", "children": ["done"], "payload": {
            "data": {"names": "{{names.result.values}}", "lines": "{{lines.result.formatted}}"},
            "template": "{{@names}} / {{@lines}}"}},
        "done": {"type": "log", "payload": {"message": "{{join.result.formatted}}"}},
    }},
    "payload": {"items": [{"name": "tea", "qty": 2}, {"name": "milk", "qty": 1}]},
}
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer dev-token"
wrk.body = [[%s]]
"""


def wrk(url: str, script: Path) -> dict:
    """One wrk run: requests/s, p50 and p99 in ms, non-2xx and socket errors."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    def latency(pct):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency(50), "p99": latency(99),
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket": socket.group(1) if socket else "none"}


def serve(workdir: Path, app: str, root: Path | None = None) -> Server:
    workdir.mkdir()
    server = Server(workdir, workers=int(os.environ.get("WEB_CONCURRENCY",
                                                         2 * os.cpu_count() + 1)),
                    app=app, LOG_FILE=str(workdir / "app.log"), MAX_CONCURRENT_RUNS="0",
                    **({"root": root} if root else {}))
    server.flask("token", "seed-dev")
    return server.start()


BASELINE = "baseline workflow"


def main() -> int:
    apps = {"5-node workflow": "wsgi:app", "bare Flask JSON": "bench.bare:app"}
    baseline = os.environ.get("BENCH_BASELINE")
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(LUA % json.dumps(WORKFLOW))
        servers = {}
        try:
            for name, app in apps.items():
                servers[name] = serve(root / app.replace(":", "-"), app)
            if baseline:
                tree = root / "baseline-tree"
                subprocess.run(["git", "worktree", "add", "--detach", str(tree), baseline],
                               check=True, capture_output=True)
                apps[BASELINE] = "wsgi:app"
                servers[BASELINE] = serve(root / "baseline", "wsgi:app", tree)
            for number in range(ROUNDS):
                # Alternate who goes first, so neither always meets the same drift.
                order = list(servers) if number % 2 == 0 else list(servers)[::-1]
                rounds.append({name: wrk(servers[name].base + "/v1/runs/sync", script)
                               for name in order})
        finally:
            for server in servers.values():
                server.stop()
            if baseline:
                subprocess.run(["git", "worktree", "remove", "--force",
                                str(root / "baseline-tree")], check=False, capture_output=True)
    print(f"wrk: {ROUNDS} rounds of {DURATION} s per endpoint, {CONNECTIONS} connections, "
          "2 threads; endpoints alternate\n")
    print("| round | endpoint | requests/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for number, results in enumerate(rounds, start=1):
        for name in apps:
            r = results[name]
            print(f"| {number} | {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['non2xx']} | {r['socket']} |")
    ratios = [r["5-node workflow"]["rps"] / r["bare Flask JSON"]["rps"] for r in rounds]
    print("\nworkflow / bare throughput by round: "
          + ", ".join(f"{ratio:.2f}" for ratio in ratios))
    median = statistics.median(ratios)
    print(f"median: {median:.2f} (goal: at least {GOAL:.2f}, "
          f"{'met' if median >= GOAL else 'not met'})")
    if baseline:
        changes = [r["5-node workflow"]["rps"] / r[BASELINE]["rps"] for r in rounds]
        print(f"this tree / {baseline} by round: "
              + ", ".join(f"{change:.2f}" for change in changes)
              + f"; median {statistics.median(changes):.2f}")
    clean = all(r[name]["non2xx"] == 0 and r[name]["socket"] == "none"
                for r in rounds for name in apps)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
