"""What gzipping JSON answers costs a worker (``python -m bench.gzip``).

Two gunicorns with the production gunicorn.conf.py, one worker each, side by side:
one with ``RUNNER_GZIP_MIN_BYTES=0`` (never compress), one with the default. The same
requests, every one with ``Accept-Encoding: gzip``, go to each in turn for
BENCH_ROUNDS rounds: a small run (``POST /v1/runs/sync``, its answer about 3 KB), and
stored runs read back (``GET /v1/runs/<id>``) of about 3 KB, 140 KB and 1.4 MB of
realistic JSON (8, 500 and 5,000 orders with ids, names, prices). For each it prints
the server's CPU per request (utime + stime of gunicorn's whole process tree over the
round, divided by the requests: the median of the rounds) and the bytes answered.

Then zlib alone, in this process, on the same answers: the CPU of one compression at
levels 1, 6 and 9, and the size it leaves, to show why the app uses level 1.
"""
from __future__ import annotations

import gzip
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.server import Server, tree_cpu

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))  # per round, the 1 MB ones a tenth
AUTH = {"Authorization": "Bearer dev-token", "Accept-Encoding": "gzip"}
WORDS = ["tea", "milk", "jam", "bread", "honey", "oats", "rice", "beans", "lentils", "coffee",
         "sugar", "salt", "pepper", "butter", "cheese", "apples", "pears", "plums", "grapes"]
NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Dennis", "Margaret", "Linus"]


def orders(count: int, seed: int = 1) -> list[dict]:
    pick = random.Random(seed)
    return [{"id": f"A-{n:06d}", "sku": pick.choice(WORDS), "qty": pick.randint(1, 9),
             "price": round(pick.uniform(0.5, 80), 2), "paid": pick.random() < 0.8,
             "customer": {"name": f"{pick.choice(NAMES)} {pick.choice(NAMES)}son",
                          "email": f"user{pick.randint(1, 99999)}@example.com"}}
            for n in range(count)]


def workflow(count: int) -> dict:
    """A run whose answer holds ``count`` orders (its root's result) and a summary."""
    return {"definition": {"nodes": {
        "root": {"type": "manual", "children": ["skus"]},
        "skus": {"type": "pluck", "children": ["done"],
                 "payload": {"array": "{{root.result.orders}}", "field": "sku"}},
        "done": {"type": "log", "payload": {"message": "{{skus.result.values.length}} skus"}},
    }}, "payload": {"orders": orders(count)}}


def send(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = dict(AUTH)
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-gzip-"))
    servers = {}
    for name, minimum in (("off", "0"), ("gzip", None)):
        (workdir / name).mkdir()
        settings = {"GZIP_MIN_BYTES": minimum} if minimum is not None else {}
        server = Server(workdir / name, workers=1, LOG_FILE="", **settings)
        server.flask("token", "seed-dev")
        servers[name] = server.start()
    try:
        small = json.dumps(workflow(8)).encode()
        cases = {"POST /v1/runs/sync (small run)": ("POST", "/v1/runs/sync", small, REQUESTS)}
        stored = {}
        for label, count, requests in (("8 orders", 8, REQUESTS),
                                       ("500 orders", 500, REQUESTS),
                                       ("5,000 orders", 5000, max(REQUESTS // 10, 5))):
            body = json.dumps(workflow(count)).encode()
            for name, server in servers.items():
                status, answer = send(server.port, "POST", "/v1/runs/sync", body)
                assert status == 200, answer[:300]
                if answer[:2] == b"\x1f\x8b":
                    answer = gzip.decompress(answer)
                stored[name, label] = json.loads(answer)["runId"]
            cases[f"GET /v1/runs/<id> ({label})"] = ("GET", label, None, requests)

        cpu: dict[tuple[str, str], list[float]] = {}
        sizes: dict[tuple[str, str], int] = {}
        plain: dict[str, bytes] = {}
        for _ in range(ROUNDS):
            for case, (method, path, body, requests) in cases.items():
                for name, server in servers.items():
                    target = path if method == "POST" else f"/v1/runs/{stored[name, path]}"
                    pids = server.tree_pids()
                    before = tree_cpu(pids)
                    for _ in range(requests):
                        status, answer = send(server.port, method, target, body)
                        assert status == 200, answer[:300]
                    time.sleep(0.05)  # the last answer's close
                    used = tree_cpu(server.tree_pids()) - before
                    cpu.setdefault((case, name), []).append(used / requests)
                    sizes[case, name] = len(answer)
                    if name == "off":
                        plain[case] = answer

        print(f"{ROUNDS} rounds; server CPU per request (median), bytes answered")
        print(f"{'request':<34} {'plain':>9} {'gzip':>9} {'extra':>9}  {'plain':>9} "
              f"{'gzip':>9}")
        for case in cases:
            off = statistics.median(cpu[case, "off"]) * 1e3
            on = statistics.median(cpu[case, "gzip"]) * 1e3
            print(f"{case:<34} {off:>7.2f}ms {on:>7.2f}ms {on - off:>+7.2f}ms  "
                  f"{sizes[case, 'off']:>9} {sizes[case, 'gzip']:>9}")

        print("\nzlib alone, one compression of the same answer (this process's CPU)")
        print(f"{'answer':<34} " + " ".join(f"{'level ' + str(n):>16}" for n in (1, 6, 9)))
        for case, text in plain.items():
            cells = []
            for level in (1, 6, 9):
                repeat = max(3, 2_000_000 // len(text))
                started = time.process_time()
                for _ in range(repeat):
                    packed = gzip.compress(text, level, mtime=0)
                spent = (time.process_time() - started) / repeat
                cells.append(f"{spent * 1e3:7.3f}ms {len(packed) / len(text):5.1%}")
            print(f"{case:<34} " + " ".join(f"{cell:>16}" for cell in cells))
    finally:
        for server in servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
