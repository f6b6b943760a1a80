"""Where one run's CPU goes, in process and reproducible (``make profile``).

The app is built as a gunicorn worker builds it — a SQLite store file, the JSON log
file through its concurrent-log-handler sink and stdout (sent to /dev/null here),
Prometheus metrics in files of a multiprocess directory — and its WSGI callable is
handed bench/http.py's 5-node workflow directly, with the same headers wrk sends.
What gunicorn itself does for a request (reading the socket, parsing HTTP, writing
the answer) is not in these figures: ``make bench-http`` measures all of it.

It prints:

1. CPU per run (this thread's user + system time over ``PROFILE_RUNS`` runs, after
   warm-up runs), and the same without the profiler's cost, per component below.
2. Per component, its share of a run, from Python's deterministic profiler
   (cProfile): every function is counted to the component of its module; a function of
   no component of its own (the standard library's json, sqlite3's C calls, builtins)
   is counted to its callers' components in proportion to the time spent under each.
3. With valgrind installed, instructions per request under callgrind: the instructions
   of two processes that do the same but differ by ``CALLGRIND_EXTRA`` requests, their
   difference divided by that number (``PYTHONHASHSEED=0``: the same figure, to a few
   tenths of a percent, on every call on one machine, however busy) — for the workflow,
   and for ``make bench-http``'s durable floor (bench/floor.py) and bare endpoint
   (bench/bare.py) built the same way, with the workflow's multiple of the floor's. Each
   component's instructions are its cProfile share of the workflow's, an estimate,
   marked ≈.

``python -m bench.profile --instructions`` prints only the instructions per run (about a
minute; the same figure whatever else the machine is doing, so two trees can be compared
on a busy machine). ``--runs N`` runs N runs and prints nothing: what callgrind measures.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.http import WORKFLOW

PROFILE_RUNS = int(os.environ.get("PROFILE_RUNS", "3000"))
WARMUP = 300
CALLGRIND_BASE, CALLGRIND_EXTRA = 50, 200
TOKEN = "dev-token"

# Components by module path, first match wins; "…" is a function of no component.
COMPONENTS = [
    ("logging", r"(^|/)logging/|app/log(batch|format|config|sinks)\.py|concurrent_log_handler|"
                r"portalocker|app/nodes/log\.py"),
    ("metrics", r"prometheus_client|app/metrics\.py"),
    ("store", r"app/store/|sqlite3/"),
    ("redaction", r"app/redact\.py"),
    ("admission: body, schema, checks",
     r"app/(api|validation|schemas|dialect|jsonread|jsonbody|payload_checks|shapes|"
     r"graph|problems)\.py|marshmallow/"),
    ("plan (cache, shape)", r"app/(plan|textcache)\.py"),
    ("run's life (runs.py)", r"app/runs\.py"),
    ("engine and nodes", r"app/(engine|attempts|state|scope|loops|bodies|pool|ticks|"
                         r"failure|expressions|jstext)\.py|app/nodes/"),
    ("Flask, Werkzeug", r"flask/|werkzeug/|app/(factory|errors|cors|config)\.py"),
    ("threads, context vars", r"threading\.py|contextlib\.py|concurrent/"),
]
PATTERNS = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]


def build_app(root: Path, which: str = "workflow"):
    """The app ``which`` (the service, bench/floor.py's or bench/bare.py's) as a gunicorn
    worker has it, its files under ``root``; and the descriptor of the real stdout."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(root / "metrics")
    os.environ["RUNNER_STORE_PATH"] = str(root / "runner.sqlite3")
    os.environ["RUNNER_LOG_FILE"] = str(root / "log" / "app.log")
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the stdout sink writes to nothing, as cheaply as to a pipe
    if which == "floor":  # (the streamed workflow is the service's app)
        from bench.floor import app
        return app, saved
    if which == "bare":
        from bench.bare import app
        return app, saved
    from app import create_app

    app = create_app({"STORE_PATH": str(root / "runner.sqlite3"),
                      "LOG_FILE": str(root / "log" / "app.log")})
    app.extensions["store"].ensure_token("dev", TOKEN, 10**12)
    return app, saved


def request_environ(body: bytes) -> dict:
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/runs/sync", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    }


def runner(app, checked=lambda answer: b'"status":"success"' in answer,
           accept: str | None = None):
    """A function that makes one request to the WSGI callable, its answer ``checked``
    (``accept``: its Accept header)."""
    body = json.dumps(WORKFLOW).encode()
    base = request_environ(body)
    if accept:
        base["HTTP_ACCEPT"] = accept

    def run() -> None:
        environ = dict(base, **{"wsgi.input": io.BytesIO(body)})
        statuses = []
        chunks = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        answer = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        if not statuses[0].startswith("200") or not checked(answer):
            raise RuntimeError(f"the run failed: {statuses[0]} {answer[:300]!r}")
    return run


def component(filename: str) -> str | None:
    for name, pattern in PATTERNS:
        if pattern.search(filename):
            return name
    return None


def shares(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per component: each function's own time to its component, or to its
    callers' in proportion to the time spent under each."""
    table = stats.stats  # {func: (cc, nc, tt, ct, callers)}
    memo: dict[tuple, dict[str, float]] = {}

    def owners(func: tuple, seen: frozenset) -> dict[str, float]:
        if func in memo:
            return memo[func]
        own = component(func[0])
        if own is not None:
            result = {own: 1.0}
        else:
            callers = table[func][4] if func in table else {}
            weights: dict[str, float] = defaultdict(float)
            total = sum(entry[3] for caller, entry in callers.items() if caller not in seen)
            for caller, entry in callers.items():
                if caller in seen or total <= 0:
                    continue
                for name, part in owners(caller, seen | {func}).items():
                    weights[name] += part * entry[3] / total
            result = dict(weights) or {"other": 1.0}
        if not seen:
            memo[func] = result
        return result

    seconds: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tt, _ct, _callers) in table.items():
        for name, part in owners(func, frozenset()).items():
            seconds[name] += tt * part
    return seconds


def instructions_per_run(which: str = "workflow") -> float | None:
    """Instructions per request of ``which`` under callgrind, or None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for runs in (CALLGRIND_BASE, CALLGRIND_BASE + CALLGRIND_EXTRA):
            out = Path(tmp) / f"callgrind.{runs}"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 sys.executable, "-m", "bench.profile", "--app", which, "--runs", str(runs)],
                check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
            counts.append(int(totals.group(1)))
    return (counts[1] - counts[0]) / CALLGRIND_EXTRA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, help="only make this many runs (for callgrind)")
    parser.add_argument("--instructions", action="store_true",
                        help="only the instructions per run, under callgrind")
    parser.add_argument("--app", choices=("workflow", "streamed", "floor", "bare"),
                        default="workflow",
                        help="with --runs or --instructions: the service (default), the "
                             "service streaming the run (Server-Sent Events), the durable "
                             "floor or the bare endpoint")
    args = parser.parse_args()
    if args.instructions:
        instructions = instructions_per_run(args.app)
        if instructions is None:
            sys.exit("--instructions needs valgrind (Debian package valgrind)")
        print(f"{instructions / 1e6:.3f} M instructions per request ({args.app})")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        app, stdout = build_app(Path(tmp), args.app)
        if args.app == "workflow":
            run = runner(app)
        elif args.app == "streamed":
            run = runner(app, lambda answer: b'"status":"success"' in answer.rpartition(
                b"event: run.finished")[2], accept="text/event-stream")
        else:
            run = runner(app, lambda answer: b'"nodes":' in answer)
        for _ in range(WARMUP if args.runs is None else 20):
            run()
        if args.runs is not None:
            for _ in range(args.runs):
                run()
            return 0
        started = time.thread_time()
        for _ in range(PROFILE_RUNS):
            run()
        cpu_us = (time.thread_time() - started) / PROFILE_RUNS * 1e6
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(PROFILE_RUNS):
            run()
        profiler.disable()
        os.dup2(stdout, 1)
    seconds = shares(pstats.Stats(profiler))
    total = sum(seconds.values())
    print(f"{PROFILE_RUNS} runs of bench/http.py's 5-node workflow through the WSGI "
          f"callable (no gunicorn), CPU per run: {cpu_us:.0f} µs\n")
    instructions = instructions_per_run()
    if instructions is None:
        print("(valgrind is not installed: no instruction counts)\n")
    else:
        floor, bare = instructions_per_run("floor"), instructions_per_run("bare")
        print(f"callgrind, instructions per request (({CALLGRIND_BASE} + {CALLGRIND_EXTRA}) "
              f"requests − {CALLGRIND_BASE}, / {CALLGRIND_EXTRA}; no gunicorn):\n")
        print("| app | M instructions | × durable floor |\n|---|---:|---:|")
        for name, value in (("workflow", instructions), ("durable floor (bench/floor.py)", floor),
                            ("bare Flask JSON (bench/bare.py)", bare)):
            print(f"| {name} | {value / 1e6:.3f} | {value / floor:.2f} |")
        print()
    print("| component | share | µs per run | ≈ k instructions per run |")
    print("|---|---:|---:|---:|")
    for name, value in sorted(seconds.items(), key=lambda item: -item[1]):
        share = value / total
        kilo = f"{share * instructions / 1e3:.0f}" if instructions else "–"
        print(f"| {name} | {share * 100:.1f} % | {share * cpu_us:.0f} | {kilo} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
