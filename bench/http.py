"""HTTP throughput, measured side by side in one run (``make bench-http``).

wrk drives (a) a 5-node workflow — root → two parallel transforms → join → log —
through the real service and (b) a bare Flask JSON endpoint, each served by
gunicorn with the production gunicorn.conf.py on 127.0.0.1, and prints
requests/s, p50/p99 latency, errors and the ratio.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.server import Server

DURATION = os.environ.get("BENCH_SECONDS", "15")
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


def measure(workdir: Path, app: str, script: Path) -> dict:
    server = Server(workdir, workers=int(os.environ.get("WEB_CONCURRENCY",
                                                         2 * os.cpu_count() + 1)),
                    app=app, LOG_FILE=str(workdir / "app.log"), MAX_CONCURRENT_RUNS="0")
    server.flask("token", "seed-dev")
    server.start()
    try:
        return wrk(server.base + "/v1/runs/sync", script)
    finally:
        server.stop()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(LUA % json.dumps(WORKFLOW))
        results = {}
        for name, app in (("5-node workflow", "wsgi:app"), ("bare Flask JSON", "bench.bare:app")):
            (root / name).mkdir()
            results[name] = measure(root / name, app, script)
    print(f"wrk: {DURATION} s, {CONNECTIONS} connections, 2 threads, one at a time\n")
    print("| endpoint | requests/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']} | "
              f"{r['socket']} |")
    ours, bare = results["5-node workflow"], results["bare Flask JSON"]
    print(f"\nworkflow / bare throughput: {ours['rps'] / bare['rps']:.2f}")
    return 0 if ours["non2xx"] == 0 and ours["socket"] == "none" else 1


if __name__ == "__main__":
    sys.exit(main())
