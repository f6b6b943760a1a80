"""Soak test: the real gunicorn under a mixed load for a while, then the books are checked.

``python -m bench.soak`` (``make soak``): SOAK_SECONDS (default 180), SOAK_CONCURRENCY
(client threads, 32), WEB_CONCURRENCY (workers, 2 × cores + 1), SOAK_DATABASE_URL
(``postgresql://…``, an empty database: the store the server uses and the checks read;
default a new SQLite file in the work directory). Every request goes
to 127.0.0.1; the one outbound URL (10.0.0.1) is refused before any connection.
Exits 1 when a check fails, and then keeps the work directory for a look. The
requests, and what each must get back, are in ``bench.soak_mix``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak_mix import BALANCES, RUNS, WEIGHTS, Call, mismatch, next_call, worst_case
from tests.server import Server

MAX_RUNS = 2  # MAX_CONCURRENT_RUNS per token: low enough that several workers reach it
SETTINGS = {"MAX_CONCURRENT_RUNS": str(MAX_RUNS), "OUTBOUND_ALLOW": "",
            # small log files, many of them: rotation happens under load, nothing is lost
            "LOG_MAX_BYTES": str(4 * 1024 * 1024), "LOG_BACKUPS": "1000"}
CLIENT_TIMEOUT = 90  # s: above the 60 s run deadline plus time in gunicorn's backlog
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


# -- the load ------------------------------------------------------------------------

def send(base: str, call: Call, secret: str) -> Call:
    """Send ``call`` and record the answer (status, JSON body, times) on it."""
    request = urllib.request.Request(base + call.path,
                                     headers={"Authorization": f"Bearer {secret}"})
    if call.body is not None:
        request.data = call.body if isinstance(call.body, bytes) else json.dumps(call.body).encode()
        request.add_header("Content-Type", call.ctype)
    call.sent, raw, headers = time.monotonic(), b"", {}
    try:
        with _direct.open(request, timeout=CLIENT_TIMEOUT) as answer:
            call.status, raw, headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        with error:
            call.status, raw, headers = error.code, error.read(), error.headers
    except OSError as error:
        raw = json.dumps({"clientError": repr(error)}).encode()
    call.received, call.retry_after = time.monotonic(), headers.get("Retry-After")
    try:
        call.response = json.loads(raw)
    except ValueError:
        call.response = {"notJson": raw[:200].decode(errors="replace")}
    return call


def load(base: str, secrets: dict, seconds: float, threads: int) -> list[Call]:
    """``threads`` clients, each sending one call after another until the time is up."""
    calls: list[Call] = []
    runs: list[Call] = []  # answered runs, for GETs and duplicate runIds
    until = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < until:
            call = next_call(rng, runs)
            calls.append(send(base, call, secrets[call.token]))
            if call.kind in RUNS and call.status == 200:
                runs.append(call)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, range(threads)))
    return calls


# -- the checks: each returns its problems, none when it passes -----------------------

@dataclass
class Books:
    """What the checks look at: the calls, the store and the logs after the load."""

    calls: list[Call]
    runs: dict[str, Call]  # runId → the 200 answer of its POST
    rows: dict[str, dict]  # the runs table, with each run's token name
    balances: dict[str, int]
    regets: dict[str, tuple]  # runId → (status, body) of a GET after the load
    log: list[str]  # every line of the app's log files, rotated ones included
    of: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))  # by token


def no_5xx(books: Books) -> list[str]:
    """No 5xx at all."""
    return [f"{c.kind} {c.status}: {c.response}" for c in books.calls if (c.status or 0) >= 500]


def as_expected(books: Books) -> list[str]:
    """Each answer is what its kind calls for (status, code, result, CU, timing)."""
    problems = ((c, mismatch(c)) for c in books.calls
                if not (c.kind in RUNS and c.status in (402, 429)))  # judged by the ledger
    return [f"{c.kind} {c.response.get('runId', '')}: {p}" for c, p in problems if p]


def stored(books: Books) -> list[str]:
    """Each answered run is stored as answered (the store and GET), and nothing else is."""
    problems = [f"{i}: stored, never answered" for i in books.rows.keys() - books.runs.keys()]
    for run_id, call in books.runs.items():
        row, body = books.rows.get(run_id), call.response
        if row is None or (row["name"], row["status"], row["total_cu"], json.loads(row["body"])) \
                != (call.token, body["status"], body["totalCu"], body):
            problems.append(f"{run_id}: stored differently, or not at all")
        if books.regets[run_id] != (200, body):
            problems.append(f"{run_id}: GET answers {books.regets[run_id][0]}, or differently")
    return problems


def balances(books: Books) -> list[str]:
    """Each balance = its start − the totalCu of its answered runs; nothing stays reserved."""
    spent = {t: sum(c.response["totalCu"] for c in books.of[t]) for t in BALANCES}
    problems = [f"{t}: {books.balances[t]} ≠ {b} − {spent[t]}" for t, b in BALANCES.items()
                if books.balances[t] != b - spent[t]]
    return problems + [f"{i}: {r['status']}, {r['reserved']} reserved" for i, r in
                       books.rows.items() if r["reserved"] or r["status"] == "running"]


def justified_402(books: Books) -> list[str]:
    """A 402 only when the balance, bounded by the runs sent and answered, fell short."""
    problems = []
    for c in (c for c in books.calls if c.status == 402):
        # charged before we sent it ≤ what the token had spent ≤ reserved before the answer
        done = sum(r.response["totalCu"] for r in books.of[c.token] if r.received < c.sent)
        begun = sum(worst_case(r.body) for r in books.of[c.token] if r.sent < c.received)
        got, start = c.response, BALANCES[c.token]
        if not (got["required"] == worst_case(c.body) > got["balance"]
                and start - begun <= got["balance"] <= start - done):
            problems.append(f"{c.token}: {got}, {start} − {done} spent, ≤ {begun} reserved")
    return problems


def justified_429(books: Books) -> list[str]:
    """A 429 (with Retry-After) only while MAX_RUNS runs of the token were in flight."""
    def in_flight(c: Call) -> int:
        return sum(r.sent < c.received and r.received > c.sent for r in books.of[c.token])
    return [f"{c.token}: {in_flight(c)} in flight, Retry-After {c.retry_after!r}"
            for c in books.calls
            if c.status == 429 and (not c.retry_after or in_flight(c) < MAX_RUNS)]


def logged(books: Books) -> list[str]:
    """The log is JSON lines, none at ERROR; one "run finished" per answered run, no other."""
    entries, problems = [], []
    for line in books.log:
        try:
            entries.append(json.loads(line))
        except ValueError:
            problems.append(f"not JSON: {line[:300]}")
    problems += [json.dumps(e)[:300] for e in entries if e["level"] in ("ERROR", "CRITICAL")]
    seen = Counter(e.get("runId") for e in entries if e["message"] == "run finished")
    return problems + [f"{i}: {seen[i]} lines" for i in seen.keys() | books.runs.keys()
                       if seen[i] != (i in books.runs)]


def exercised(books: Books) -> list[str]:
    """Every kind of the mix was sent; tokens ran out (402) and ran too many at once (429)."""
    seen = Counter(c.kind for c in books.calls) + Counter(c.status for c in books.calls)
    return [f"never seen: {k}" for k in [*WEIGHTS, 402, 429] if not seen[k]]


CHECKS = [no_5xx, as_expected, stored, balances, justified_402, justified_429, logged, exercised]


# -- running it ----------------------------------------------------------------------

def gather(server: Server, calls: list[Call], secrets: dict, threads: int) -> Books:
    """Look every answered run up again, then read the store and the log files."""
    runs = {c.response["runId"]: c for c in calls if c.kind in RUNS and c.status == 200}
    with ThreadPoolExecutor(threads) as pool:
        again = pool.map(lambda c: send(server.base, Call("get", c.token, path=(
            f"/v1/runs/{c.response['runId']}")), secrets[c.token]), runs.values())
        regets = {run_id: (c.status, c.response) for run_id, c in zip(runs, again, strict=True)}
    rows, money = read_store(server.env.get("RUNNER_DATABASE_URL"),
                             server.env["RUNNER_STORE_PATH"])
    log = [line for path in sorted((server.workdir / "log").glob("app.log*"))
           for line in path.read_text().splitlines()]
    books = Books(calls, runs, rows, money, regets, log)
    for call in runs.values():
        books.of[call.token].append(call)
    return books


def read_store(url: str | None, sqlite_path: str) -> tuple[dict[str, dict], dict[str, int]]:
    """The runs (by runId, each with its token's name) and the balances (by token name),
    read from the database itself: PostgreSQL at ``url``, else the SQLite file."""
    runs = "SELECT runs.*, tokens.name FROM runs JOIN tokens ON tokens.id = runs.token_id"
    tokens = "SELECT name, balance FROM tokens"
    if url:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, row_factory=dict_row) as db:
            return ({r["id"]: r for r in db.execute(runs)},
                    {r["name"]: r["balance"] for r in db.execute(tokens)})
    db = sqlite3.connect(sqlite_path)
    db.row_factory = sqlite3.Row
    try:
        return ({r["id"]: dict(r) for r in db.execute(runs)},
                {r["name"]: r["balance"] for r in db.execute(tokens)})
    finally:
        db.close()


def summary(calls: list[Call], seconds: float) -> None:
    """Requests by kind and status, rate and latency."""
    def ms(some: list[Call], q: float) -> float:
        times = sorted(c.received - c.sent for c in some)
        return 1000 * times[min(len(times) - 1, int(q * len(times)))]

    print(f"\n{'kind':<14}{'requests':>9} {'p50 ms':>7} {'p99 ms':>7}  statuses")
    for kind in [*sorted({c.kind for c in calls}), "all"]:
        some = [c for c in calls if kind in (c.kind, "all")]
        statuses = Counter(str(c.status or "none") for c in some)
        print(f"{kind:<14}{len(some):>9} {ms(some, .5):7.1f} {ms(some, .99):7.1f}  "
              + " ".join(f"{s}:{n}" for s, n in sorted(statuses.items())))
    print(f"\n{len(calls)} requests in {seconds:.1f} s: {len(calls) / seconds:.1f} req/s, "
          f"p50 {ms(calls, .5):.1f} ms, p99 {ms(calls, .99):.1f} ms")


def verify(books: Books) -> int:
    """Run every check and print what fails; the number of failed checks."""
    failed = 0
    for check in CHECKS:
        try:
            problems = check(books)
        except Exception as error:  # a check tripping over an odd answer is a failure too
            problems = [f"the check raised {error!r}"]
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {check.__doc__}")
        for problem in problems[:10]:
            print(f"       {problem}")
        if len(problems) > 10:
            print(f"       … and {len(problems) - 10} more")
    return failed


def main() -> int:
    """Start gunicorn, load it, check the books, stop it; 1 when a check failed."""
    seconds = float(os.environ.get("SOAK_SECONDS", "180"))
    threads = int(os.environ.get("SOAK_CONCURRENCY", "32"))
    workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
    url = os.environ.get("SOAK_DATABASE_URL", "")
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    server = Server(workdir, workers=workers, **SETTINGS, **({"DATABASE_URL": url} if url else {}))
    if url:
        server.flask("token", "list")  # creates the schema in a new database
        if read_store(url, "")[1]:
            print("soak: SOAK_DATABASE_URL must name an empty database (the books are "
                  "checked against everything in it)")
            shutil.rmtree(workdir)
            return 1
    try:
        secrets = {name: server.flask("token", "create", name, "--balance", str(balance))
                   for name, balance in {**BALANCES, "off": 100}.items()}
        server.flask("token", "disable", "off")
        secrets["unknown"] = "wr_never_issued"
        server.start()
        print(f"soak: {seconds:g} s, {threads} clients, {workers} workers at {server.base}, "
              f"{'PostgreSQL' if url else 'SQLite'} store")
        started = time.monotonic()
        calls = load(server.base, secrets, seconds, threads)
        elapsed = time.monotonic() - started
        books = gather(server, calls, secrets, threads)
    finally:
        server.stop()
    summary(calls, elapsed)
    if failed := verify(books):
        print(f"soak: work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir)
    print(f"soak: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
