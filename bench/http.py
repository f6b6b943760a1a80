"""HTTP throughput and CPU per run, measured side by side in one run (``make bench-http``).

wrk drives the same 5-node workflow — root → two parallel transforms → join → log —
through the real service on (a) the SQLite store, (b) the same streamed as Server-Sent
Events (``Accept: text/event-stream``, SPEC §12) from a server of its own, so its CPU
per run is its own, (c) the same on a store with ``RUNNER_SQLITE_SYNCHRONOUS=FULL`` (a
sync of the disk at every commit: what durability through a power loss costs), (d) the
PostgreSQL store; then (e) the durable floor
(bench/floor.py): a bare Flask endpoint doing only what no design of a run can avoid —
read the body, two durable SQLite transactions in WAL mode on a store file all its
workers share (reserve; charge and store the ~1.5 KB answer), one log line appended
with one ``os.write`` — and (f) a bare Flask JSON endpoint (bench/bare.py). Each is
served by gunicorn with the production gunicorn.conf.py on 127.0.0.1, its store and
log files in its own work directory. For every endpoint and round it prints
requests/s, p50/p99 latency and errors, and the server's CPU per request: utime +
stime of gunicorn's whole process tree over the round (the master with its reaped
children's cutime + cstime, every live worker and helper) divided by the requests wrk
counted; and that CPU (with the database's, for PostgreSQL) as a multiple of the
durable floor's in the same round (``× floor``). A table of its own gives the
workflow's, the floor's and the bare endpoint's CPU per run by round, and the
workflow's multiple of the floor.
Beside PostgreSQL's it prints the database's CPU per request, measured the same way
on the postmaster's tree (backends, background processes) — when the cluster is
tests/pg.py's throwaway one on this machine (``RUNNER_TEST_DATABASE_URL`` unset;
without Debian's postgresql the PostgreSQL column is left out).

All servers run for the whole benchmark and wrk alternates between them for
BENCH_ROUNDS rounds: a shared machine's speed drifts by half within minutes, so
only a ratio of two measurements taken back to back means anything. The
verdicts are medians of the rounds' ratios: the workflow's server CPU per run (SQLite)
against the durable floor's (goal at most 1.5, stretch 1.25), the workflow's
throughput against the bare endpoint's, the streamed run's service CPU against the
plain one's, and PostgreSQL's service CPU per run against SQLite's.

``BENCH_BASELINE=<git revision>`` adds a server running that revision's code
(checked out into a temporary worktree) on the same workflow and SQLite, for a
before/after comparison measured in the same rounds.

Before the rounds, one request to each workflow server and to the floor checks that
the run succeeds (wrk sees only the status line, and a stream is 200 whatever happens
in it).

Exits 1 when any answer was not 2xx or wrk reported a socket error.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import pg
from tests.server import Server, process_tree, tree_cpu

DURATION = os.environ.get("BENCH_SECONDS", "8")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
GOAL = 0.5  # the workflow should sustain half the bare endpoint's throughput
FLOOR_GOAL, FLOOR_STRETCH = 1.5, 1.25  # the workflow's CPU per run, in durable floors
CPU_GOAL = 1.0  # PostgreSQL's service CPU per run: at most SQLite's
STREAM_GOAL = 1.15  # a streamed run's service CPU: at most 15 % more than a plain one's
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "16")
SETTLE_S = 0.3  # after wrk stops, the requests it left in flight finish before CPU is read
SQLITE, POSTGRES, BARE = "workflow, SQLite", "workflow, PostgreSQL", "bare Flask JSON"
FLOOR = "durable floor"
STREAMED = "workflow streamed, SQLite"
FULL = "workflow, SQLite synchronous=FULL"
BASELINE = "baseline workflow"
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
STREAM = "text/event-stream"


@dataclass
class Endpoint:
    """A server wrk drives, and the database server that works for it, if measured."""

    server: Server
    streamed: bool = False  # its runs asked for as Server-Sent Events
    database_pid: int | None = None  # the postmaster's

    def cpu(self) -> tuple[float, float | None]:
        """CPU seconds so far of the server's process tree and of the database's."""
        database = (tree_cpu(process_tree(self.database_pid))
                    if self.database_pid else None)
        return tree_cpu(self.server.tree_pids()), database


def wrk(url: str, script: Path) -> dict:
    """One wrk run: requests, requests/s, p50 and p99 in ms, non-2xx and socket errors."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    def latency(pct):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: (.*)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency(50), "p99": latency(99),
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket": socket.group(1) if socket else "none"}


def measure(endpoint: Endpoint, script: Path) -> dict:
    """One wrk round against ``endpoint``, with the CPU ms per request of its server
    (``service_ms``) and of its database (``db_ms``, None when not measured)."""
    service, database = endpoint.cpu()
    result = wrk(endpoint.server.base + "/v1/runs/sync", script)
    time.sleep(SETTLE_S)
    service_after, database_after = endpoint.cpu()
    per_request = 1000 / max(1, result["requests"])
    result["service_ms"] = (service_after - service) * per_request
    result["db_ms"] = (None if database is None
                       else (database_after - database) * per_request)
    return result


def serve(workdir: Path, app: str, root: Path | None = None, **settings: str) -> Server:
    workdir.mkdir()
    server = Server(workdir, workers=int(os.environ.get("WEB_CONCURRENCY",
                                                         2 * os.cpu_count() + 1)),
                    app=app, LOG_FILE=str(workdir / "app.log"), MAX_CONCURRENT_RUNS="0",
                    **({"root": root} if root else {}), **settings)
    server.flask("token", "seed-dev")  # on PostgreSQL, this migrates the new database too
    return server.start()


def start_endpoints(root: Path, stack: contextlib.ExitStack) -> dict[str, Endpoint]:
    """Every server of the benchmark, started; ``stack`` stops them (and the rest)."""
    def started(name: str, app: str, **settings) -> Server:
        server = serve(root / name.replace(" ", "-").replace(",", ""), app, **settings)
        stack.callback(server.stop)
        return server

    endpoints = {SQLITE: Endpoint(started(SQLITE, "wsgi:app")),
                 STREAMED: Endpoint(started(STREAMED, "wsgi:app"), streamed=True),
                 FULL: Endpoint(started(FULL, "wsgi:app", SQLITE_SYNCHRONOUS="FULL"))}
    database = pg.Server.start()
    if database is None:
        print("no PostgreSQL (Debian's postgresql, or RUNNER_TEST_DATABASE_URL): "
              "its column is left out\n")
    else:
        stack.callback(database.stop)
        url = database.create_database()
        stack.callback(database.drop_database, url)
        endpoints[POSTGRES] = Endpoint(started(POSTGRES, "wsgi:app", DATABASE_URL=url),
                                       database_pid=database.postmaster_pid())
    endpoints[FLOOR] = Endpoint(started(FLOOR, "bench.floor:app"))
    endpoints[BARE] = Endpoint(started(BARE, "bench.bare:app"))
    baseline = os.environ.get("BENCH_BASELINE")
    if baseline:
        tree = root / "baseline-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), baseline],
                       check=True, capture_output=True)
        stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
        endpoints[BASELINE] = Endpoint(started(BASELINE, "wsgi:app", root=tree))
    return endpoints


def check_runs(endpoints: dict[str, Endpoint]) -> None:
    """One run through each workflow server and the durable floor, which must succeed:
    plain, its answer's status; streamed, the status of the answer its last event
    (``run.finished``) holds."""
    for name, endpoint in endpoints.items():
        if name == BARE:
            continue
        request = urllib.request.Request(
            endpoint.server.base + "/v1/runs/sync", data=json.dumps(WORKFLOW).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer dev-token",
                     "Accept": STREAM if endpoint.streamed else "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        if endpoint.streamed:
            last = text.strip().split("\n\n")[-1].split("\n")
            if last[1] != "event: run.finished":
                raise RuntimeError(f"{name}: the stream ended with {last!r}")
            text = last[2].removeprefix("data: ")
        status = json.loads(text)["status"]
        if status != "success":
            raise RuntimeError(f"{name}: the run ended {status!r}: {text[:500]}")


def run_rounds(endpoints: dict[str, Endpoint], scripts: dict[bool, Path]) -> list[dict]:
    """BENCH_ROUNDS rounds, each one wrk run per endpoint (with ``scripts[streamed]``); a
    round's results by name."""
    rounds = []
    for number in range(ROUNDS):
        # Alternate who goes first, so neither always meets the same drift.
        order = list(endpoints) if number % 2 == 0 else list(endpoints)[::-1]
        rounds.append({name: measure(endpoints[name], scripts[endpoints[name].streamed])
                       for name in order})
    return rounds


def milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def total_ms(result: dict) -> float:
    """CPU ms per request of the server and of its database, if measured."""
    return result["service_ms"] + (result["db_ms"] or 0)


def floors(results: dict, name: str) -> float:
    """``name``'s total CPU per request in a round, as a multiple of the durable floor's."""
    return total_ms(results[name]) / results[FLOOR]["service_ms"]


def print_rounds(rounds: list[dict], names: list[str]) -> None:
    print(f"wrk: {ROUNDS} rounds of {DURATION} s per endpoint, {CONNECTIONS} connections, "
          "2 threads; endpoints alternate. CPU: ms of user + system time per request; "
          "× floor: service + DB CPU over the durable floor's in the same round\n")
    print("| round | endpoint | requests/s | p50 ms | p99 ms | service CPU | DB CPU "
          "| × floor | non-2xx | socket errors |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for number, results in enumerate(rounds, start=1):
        for name in names:
            r = results[name]
            print(f"| {number} | {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{milliseconds(r['service_ms'])} | {milliseconds(r['db_ms'])} | "
                  f"{floors(results, name):.2f} | {r['non2xx']} | {r['socket']} |")


def print_floor(rounds: list[dict]) -> None:
    """Server CPU per run of the workflow, the durable floor and the bare endpoint, by
    round, and the workflow's multiple of the floor."""
    print("\nserver CPU per run, ms, by round\n")
    print("| round | workflow, SQLite | durable floor | bare Flask JSON | workflow × floor |")
    print("|---:|---:|---:|---:|---:|")
    for number, results in enumerate(rounds, start=1):
        print(f"| {number} | {results[SQLITE]['service_ms']:.2f} | "
              f"{results[FLOOR]['service_ms']:.2f} | {results[BARE]['service_ms']:.2f} | "
              f"{floors(results, SQLITE):.2f} |")
    def median(name: str) -> float:
        return statistics.median(r[name]["service_ms"] for r in rounds)
    print(f"| median | {median(SQLITE):.2f} | {median(FLOOR):.2f} | {median(BARE):.2f} | "
          f"{statistics.median(floors(r, SQLITE) for r in rounds):.2f} |")


def print_medians(rounds: list[dict], names: list[str]) -> None:
    def median(name: str, key: str) -> float | None:
        values = [r[name][key] for r in rounds]
        return None if None in values else statistics.median(values)

    print("\nmedians of the rounds (CPU: ms per request; total: service + DB)\n")
    print("| endpoint | requests/s | p50 ms | p99 ms | service CPU | DB CPU | total CPU "
          "| × floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        service, database = median(name, "service_ms"), median(name, "db_ms")
        total = statistics.median(total_ms(r[name]) for r in rounds)
        print(f"| {name} | {median(name, 'rps'):.0f} | {median(name, 'p50'):.2f} | "
              f"{median(name, 'p99'):.2f} | {milliseconds(service)} | "
              f"{milliseconds(database)} | {milliseconds(total)} | "
              f"{statistics.median(floors(r, name) for r in rounds):.2f} |")


def print_ratio(title: str, rounds: list[dict], ratio: Callable[[dict], float]) -> float:
    """``ratio(round)`` for every round, and their median; the median."""
    values = [ratio(r) for r in rounds]
    median = statistics.median(values)
    print(f"{title} by round: " + ", ".join(f"{value:.2f}" for value in values)
          + f"; median {median:.2f}")
    return median


def print_verdicts(rounds: list[dict], names: list[str]) -> None:
    print()
    median = print_ratio("workflow (SQLite) / durable floor server CPU per run", rounds,
                         lambda r: floors(r, SQLITE))
    verdict = ("stretch met" if median <= FLOOR_STRETCH else "met" if median <= FLOOR_GOAL
               else "not met")
    print(f"  goal: at most {FLOOR_GOAL:.2f} (stretch {FLOOR_STRETCH:.2f}), {verdict}")
    print_ratio("workflow (SQLite) / durable floor throughput", rounds,
                lambda r: r[SQLITE]["rps"] / r[FLOOR]["rps"])
    median = print_ratio("workflow (SQLite) / bare throughput", rounds,
                         lambda r: r[SQLITE]["rps"] / r[BARE]["rps"])
    print(f"  goal: at least {GOAL:.2f}, {'met' if median >= GOAL else 'not met'}")
    median = print_ratio("streamed / plain service CPU per run (SQLite)", rounds,
                         lambda r: r[STREAMED]["service_ms"] / r[SQLITE]["service_ms"])
    print(f"  goal: at most {STREAM_GOAL:.2f}, "
          f"{'met' if median <= STREAM_GOAL else 'not met'}")
    print_ratio("streamed / plain throughput (SQLite)", rounds,
                lambda r: r[STREAMED]["rps"] / r[SQLITE]["rps"])
    print_ratio("synchronous=FULL / NORMAL service CPU per run (SQLite)", rounds,
                lambda r: r[FULL]["service_ms"] / r[SQLITE]["service_ms"])
    print_ratio("synchronous=FULL / NORMAL throughput (SQLite)", rounds,
                lambda r: r[FULL]["rps"] / r[SQLITE]["rps"])
    print_ratio("synchronous=FULL / NORMAL p50 latency (SQLite)", rounds,
                lambda r: r[FULL]["p50"] / r[SQLITE]["p50"])
    if POSTGRES in names:
        median = print_ratio("PostgreSQL / SQLite service CPU per run", rounds,
                             lambda r: r[POSTGRES]["service_ms"] / r[SQLITE]["service_ms"])
        print(f"  goal: at most {CPU_GOAL:.2f}, {'met' if median <= CPU_GOAL else 'not met'}")
        print_ratio("PostgreSQL / SQLite throughput", rounds,
                    lambda r: r[POSTGRES]["rps"] / r[SQLITE]["rps"])
    if BASELINE in names:
        print_ratio(f"this tree / {os.environ['BENCH_BASELINE']} throughput", rounds,
                    lambda r: r[SQLITE]["rps"] / r[BASELINE]["rps"])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        scripts = {False: root / "post.lua", True: root / "stream.lua"}
        scripts[False].write_text(LUA % json.dumps(WORKFLOW))
        scripts[True].write_text(LUA % json.dumps(WORKFLOW)
                                 + f'wrk.headers["Accept"] = "{STREAM}"\n')
        endpoints = start_endpoints(root, stack)
        check_runs(endpoints)
        rounds = run_rounds(endpoints, scripts)
    names = list(endpoints)
    print_rounds(rounds, names)
    print_medians(rounds, names)
    print_floor(rounds)
    print_verdicts(rounds, names)
    clean = all(r[name]["non2xx"] == 0 and r[name]["socket"] == "none"
                for r in rounds for name in names)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
