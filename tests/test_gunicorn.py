"""The service as deployed: real gunicorn workers sharing one store."""
from __future__ import annotations

import json
import os
import runpy
import signal
import sqlite3
import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import definition
from tests.server import ROOT, Server, free_port, raw_exchange

pytestmark = pytest.mark.server

ONE_CU = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"}})}


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path, workers=4, MAX_CONCURRENT_RUNS="0")
    server.flask("token", "seed-dev")
    server.start()
    yield server
    server.stop()


def balance(server, name):
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        return db.execute("SELECT balance FROM tokens WHERE name = ?", (name,)).fetchone()[0]


def test_concurrent_runs_never_overdraw_a_balance(server):
    secret = server.flask("token", "create", "budget", "--balance", "7")
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: server.request("POST", "/v1/runs/sync", ONE_CU,
                                                         token=secret), range(30)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 7 + [402] * 23, server.log_tail()
    assert all(body["required"] == 1 for status, body in results if status == 402)
    assert balance(server, "budget") == 0


# A loop of 5 items × (log → 10 ms delay): 1 CU reserved for the run (the loop counts as
# one node), then 10 more when the loop starts (SPEC §11); 11 CU when it runs, 1 when the
# balance cannot cover the loop (INSUFFICIENT_CU at its start).
LOOP = {"definition": definition(
    "root>each", "a>wait",
    each={"type": "for-each", "loopBody": ["a"],
          "payload": {"array": "{{root.result.items}}", "concurrency": 5}},
    a={"type": "log", "payload": {"message": "#{{$index}}"}},
    wait={"type": "delay", "payload": {"delayMs": 10}}), "payload": {"items": [1, 2, 3, 4, 5]}}


def ledger(server, name):
    """The token's balance, its runs still running, and the CU they still hold."""
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        return db.execute(
            "SELECT balance, (SELECT COUNT(*) FROM runs WHERE token_id = tokens.id "
            "AND status = 'running'), (SELECT COALESCE(SUM(reserved), 0) FROM runs "
            "WHERE token_id = tokens.id) FROM tokens WHERE name = ?", (name,)).fetchone()


def test_concurrent_loops_never_overdraw_a_balance_and_the_books_add_up(server):
    """50 CU cover four whole loops (44) and no fifth: racing runs are refused (402) or
    their loop fails INSUFFICIENT_CU at its start, and every CU is accounted for."""
    secret = server.flask("token", "create", "loops", "--balance", "50")
    lowest, done = [50], False

    def watch():
        while not done:
            lowest[0] = min(lowest[0], ledger(server, "loops")[0])
            time.sleep(0.005)

    with ThreadPoolExecutor(13) as pool:
        watcher = pool.submit(watch)
        results = list(pool.map(lambda _: server.request("POST", "/v1/runs/sync", LOOP,
                                                         token=secret), range(30)))
        done = True
        watcher.result()
    assert {status for status, _ in results} <= {200, 402}, server.log_tail()
    runs = [body for status, body in results if status == 200]
    assert all(body["required"] == 1 for status, body in results if status == 402)
    loops = [run["executionState"]["each"] for run in runs]
    assert {loop["status"] for loop in loops} == {"success", "failure"}
    assert {loop["error"]["code"] for loop in loops if loop["status"] == "failure"} \
        == {"INSUFFICIENT_CU"}
    for run in runs:
        assert run["totalCu"] == sum(s.get("attempts", 0) for s in run["executionState"].values())
        assert run["totalCu"] == (11 if run["executionState"]["each"]["status"] == "success"
                                  else 1)
    assert lowest[0] >= 0
    assert ledger(server, "loops") == (50 - sum(run["totalCu"] for run in runs), 0, 0)
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        stored = {run_id: (total_cu, json.loads(body)["totalCu"]) for run_id, total_cu, body
                  in db.execute("SELECT runs.id, total_cu, body FROM runs JOIN tokens "
                                "ON tokens.id = token_id WHERE tokens.name = 'loops'")}
    assert stored == {run["runId"]: (run["totalCu"],) * 2 for run in runs}


def test_runs_are_stored_across_workers(server):
    run_ids = [server.request("POST", "/v1/runs/sync", ONE_CU)[1]["runId"] for _ in range(6)]
    for run_id in run_ids:  # looked up on whichever worker takes the request
        status, body = server.request("GET", f"/v1/runs/{run_id}")
        assert status == 200 and body["status"] == "success"


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def scrape_until(server, expected: dict[str, float], within: float = 2.0) -> str:
    """/metrics once it shows ``expected`` (name → value), or the last scrape after
    ``within`` seconds."""
    return server.metrics(lambda text: all(metric(text, name) == value
                                           for name, value in expected.items()), within)


def test_metrics_add_up_across_workers(server):
    failing = {"definition": definition("root>a", a={"type": "log", "payload": {}})}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: server.request("POST", "/v1/runs/sync", ONE_CU), range(8)))
    server.request("POST", "/v1/runs/sync", failing)  # a 400: no run
    text = scrape_until(server, {'runner_runs_total{status="success"}': 8,
                                 "runner_runs_in_progress": 0})
    assert metric(text, 'runner_runs_total{status="success"}') == 8
    assert metric(text, 'runner_node_executions_total{status="success",type="log"}') == 8
    assert metric(text, "runner_compute_units_charged_total") == 8
    assert metric(text, "runner_run_duration_seconds_count") == 8
    assert metric(text, "runner_runs_in_progress") == 0


COUNTS = ('runner_runs_total{status="success"}', "runner_compute_units_charged_total",
          'runner_node_executions_total{status="success",type="log"}',
          "runner_run_duration_seconds_count")


def test_metrics_show_other_workers_runs_within_two_seconds(tmp_path):
    """Each worker writes its counts at most once a second: the runs of both workers,
    and one in progress, are in /metrics within 2 s, whichever worker answers it."""
    server = Server(tmp_path, workers=2, MAX_CONCURRENT_RUNS="0")
    server.flask("token", "seed-dev")
    server.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: server.request("POST", "/v1/runs/sync", ONE_CU),
                          range(20)))
        text = scrape_until(server, dict.fromkeys(COUNTS, 20))
        assert {name: metric(text, name) for name in COUNTS} == dict.fromkeys(COUNTS, 20)
        with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
            assert db.execute("SELECT COUNT(DISTINCT worker_pid) FROM runs").fetchone()[0] == 2
        held = {"definition": definition("root>wait", wait={
            "type": "delay", "payload": {"delayMs": 2500}})}
        assert server.request("POST", "/v1/runs", held)[0] == 202
        assert metric(scrape_until(server, {"runner_runs_in_progress": 1}),
                      "runner_runs_in_progress") == 1
        assert metric(scrape_until(server, {"runner_runs_in_progress": 0}, within=4),
                      "runner_runs_in_progress") == 0
    finally:
        server.stop()


def test_metrics_of_a_worker_that_exits_are_kept(tmp_path):
    """A worker stopped (TERM, as on a restart or recycling) right after its runs writes
    the counts of its last second before it exits."""
    server = Server(tmp_path, workers=2, MAX_CONCURRENT_RUNS="0")
    server.flask("token", "seed-dev")
    server.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: server.request("POST", "/v1/runs/sync", ONE_CU),
                          range(10)))
        old = server.worker_pids()
        for pid in old:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (len(set(server.worker_pids()) - set(old)) < 2
               or server.log_tail(10_000).count("worker ready") < 4):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        text = scrape_until(server, dict.fromkeys(COUNTS, 10))
        assert {name: metric(text, name) for name in COUNTS} == dict.fromkeys(COUNTS, 10)
    finally:
        server.stop()


def test_workers_share_the_log_file_without_losing_or_mixing_lines(tmp_path):
    server = Server(tmp_path, workers=4, MAX_CONCURRENT_RUNS="0", LOG_MAX_BYTES="65536",
                    LOG_BACKUPS="100")
    server.flask("token", "seed-dev")
    server.start()
    try:
        def run(n):
            body = {"definition": definition("root>a", a={"type": "log", "payload": {
                "message": f"line-{n:03d}-" + "x" * 2000}})}
            return server.request("POST", "/v1/runs/sync", body)[0]

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(run, range(120))) == {200}
    finally:
        server.stop()
    files = sorted((tmp_path / "log").glob("app.log*"))
    assert len(files) > 2, "the file never rotated: the test would prove less"
    entries = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    logged = sorted(e["message"][:8] for e in entries if e["message"].startswith("line-"))
    assert logged == [f"line-{n:03d}" for n in range(120)]
    summaries = [e for e in entries if e["message"] == "run finished"]
    assert len(summaries) == 120 and len({e["pid"] for e in summaries}) > 1


def wait_for(predicate, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def running_pid(server, run_id):
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        row = db.execute("SELECT worker_pid FROM runs WHERE id = ? AND status = 'running'",
                         (run_id,)).fetchone()
    return row and row[0]


def attempts(server, run_id):
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        row = db.execute("SELECT attempts FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row and row[0]


def slow_run(run_id, ms=10_000):
    return {"runId": run_id, "definition": definition("root>wait", wait={
        "type": "delay", "payload": {"delayMs": ms}})}


def test_a_killed_worker_leaves_no_run_running_and_charges_only_started_attempts(server):
    """SPEC §3: the run's started attempts (known from the store) are charged, the rest of
    its reservation released."""
    before = balance(server, "dev-token")
    with ThreadPoolExecutor(1) as pool:
        killed = slow_run("run_killed")
        killed["definition"]["nodes"]["wait"]["retry"] = {"maxAttempts": 3}
        pending = pool.submit(server.request, "POST", "/v1/runs/sync", killed)
        pid = wait_for(lambda: running_pid(server, "run_killed"))
        wait_for(lambda: attempts(server, "run_killed"))  # the delay has started
        assert balance(server, "dev-token") == before - 3  # reserved
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(OSError):  # the connection dies with the worker
            pending.result(timeout=30)
    status, run = wait_for(lambda: (lambda r: r if r[1]["status"] != "running" else None)(
        server.request("GET", "/v1/runs/run_killed")))
    assert status == 200 and run["status"] == "failure" and run["error"]["code"] == "ABORTED"
    assert run["totalCu"] == 1
    assert balance(server, "dev-token") == before - 1
    assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200  # the service goes on


def test_runs_beyond_the_token_limit_get_429(tmp_path):
    server = Server(tmp_path, workers=3, MAX_CONCURRENT_RUNS="1")
    server.flask("token", "seed-dev")
    server.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(server.request, "POST", "/v1/runs/sync",
                                slow_run("run_first", 1500))
            wait_for(lambda: running_pid(server, "run_first"))
            status, body = server.request("POST", "/v1/runs/sync", ONE_CU)
            assert status == 429 and body["code"] == 429000
            assert first.result(timeout=30)[0] == 200
        assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
    finally:
        server.stop()


def test_by_default_one_token_cannot_occupy_every_worker(tmp_path):
    """SPEC §8: RUNNER_MAX_CONCURRENT_RUNS defaults to the workers but one (here 2 of 3),
    so another token still runs while one token's extra run gets 429."""
    server = Server(tmp_path, workers=3)
    server.env.pop("RUNNER_MAX_CONCURRENT_RUNS", None)
    server.flask("token", "seed-dev")
    other = server.flask("token", "create", "other", "--balance", "10")
    server.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(server.request, "POST", "/v1/runs/sync",
                                slow_run(f"run_hog_{n}", 3000)) for n in range(2)]
            for n in range(2):
                wait_for(lambda n=n: running_pid(server, f"run_hog_{n}"))
            status, body = server.request("POST", "/v1/runs/sync", slow_run("run_hog_2", 3000))
            assert status == 429 and body["code"] == 429000
            started = time.monotonic()
            status, body = server.request("POST", "/v1/runs/sync", ONE_CU, token=other)
            assert status == 200 and body["status"] == "success"
            assert time.monotonic() - started < 2  # not queued behind the slow runs
            assert all(not future.done() for future in slow)
            assert [future.result(timeout=30)[0] for future in slow] == [200, 200]
    finally:
        server.stop()


def test_bodies_chunked_or_of_known_length_are_read_whole(server):
    body = json.dumps(ONE_CU).encode()
    half = len(body) // 2
    for headers, data in ((f"Content-Length: {len(body)}\r\n", body), (
            "Transfer-Encoding: chunked\r\n", b"".join(
                b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
            + b"0\r\n\r\n")):
        status, _, answer = raw_exchange(server.port, (
            "POST /v1/runs/sync HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Authorization: Bearer dev-token\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\n{headers}\r\n").encode() + data)
        assert status == 200 and json.loads(answer)["status"] == "success", answer


@pytest.mark.parametrize(("request_head", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"GET /livez HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: 1\r\n" % n for n in range(150)) + b"\r\n", 431),
    (b"NOT A REQUEST\r\n\r\n", 400),
])
def test_gunicorns_own_refusals_are_json(server, request_head, status):
    answer_status, headers, body = raw_exchange(server.port, request_head)
    assert answer_status == status
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["code"] == status * 1000 and answer["message"] and answer["requestId"]
    assert "aaaa" not in body.decode()  # what the client sent is not echoed


def test_a_warning_when_listening_beyond_this_host(monkeypatch, tmp_path):
    # The config sets this variable for the server it configures: not for this process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    warnings = []

    def fake(address):
        sock = types.SimpleNamespace(getsockname=lambda: address)
        return types.SimpleNamespace(sock=sock)

    server = types.SimpleNamespace(
        LISTENERS=[fake(("127.0.0.1", 8000)), fake(("::1", 8000, 0, 0)), fake("/run/r.sock")],
        log=types.SimpleNamespace(warning=lambda *args: warnings.append(args)))
    hooks["when_ready"](server)
    assert warnings == []
    server.LISTENERS.append(fake(("0.0.0.0", 8000)))
    hooks["when_ready"](server)
    assert len(warnings) == 1 and "buffering proxy" in warnings[0][0]


def test_sigterm_lets_the_run_in_flight_finish(server):
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.request, "POST", "/v1/runs/sync",
                              slow_run("run_graceful", 1500))
        wait_for(lambda: running_pid(server, "run_graceful"))
        server.process.send_signal(signal.SIGTERM)
        status, body = pending.result(timeout=30)
    assert status == 200 and body["status"] == "success"
    assert body["executionState"]["wait"]["result"]["delayedMs"] == 1500
    assert server.process.wait(timeout=30) == 0


def test_a_malformed_database_url_stops_the_start_up_with_one_line(tmp_path):
    server = Server(tmp_path, workers=1, DATABASE_URL="mysql://runner:s3cret@db/runner")
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        server.start()
    server.stop()
    lines = [line for line in server.log_tail().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "RUNNER_DATABASE_URL: expected sqlite" in lines[0]
    assert "s3cret" not in server.log_tail()  # a URL may hold a password: never shown
    assert "Traceback" not in server.log_tail()
    assert server.process.returncode == 1


def test_a_database_that_cannot_be_reached_at_start_up_stops_it_with_one_line(tmp_path):
    """Issue 14's bad input: the master says why in one line and exits 1 (its service
    manager starts it again); no worker starts, nothing retries in a loop."""
    server = Server(tmp_path, workers=2, DATABASE_URL=(
        f"postgresql://runner:s3cret@127.0.0.1:{free_port()}/runner"))
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        server.start()
    server.stop()
    log = server.log_tail(1000)
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1, log
    assert "the store is unavailable" in lines[0] and "Connection refused" in lines[0], log
    assert "Booting worker" not in log
    assert "Traceback" not in log and "psycopg.pool" not in log and "s3cret" not in log
    assert server.process.returncode == 1
