"""What an operator sees of the service on real gunicorn: its log lines, its metrics,
its stop, its compressed answers."""
from __future__ import annotations

import gzip
import json
import signal
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import definition
from tests.nginx import request, stream
from tests.server import Server

pytestmark = pytest.mark.server

ONE_CU = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"}})}


def log_lines(server: Server) -> list[dict]:
    """Every JSON line gunicorn's master and workers wrote to stdout."""
    lines = (server.workdir / "gunicorn.out").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def wait_for(predicate, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path, workers=1)
    server.flask("token", "seed-dev")
    server.start()
    yield server
    server.stop()


def test_lines_between_requests_carry_no_request_id(server):
    """The last request is a run started without waiting, whose work follows its 202:
    that work still logs the request's id, gunicorn's "Worker exiting" does not."""
    status, _ = server.request("POST", "/v1/runs", ONE_CU, headers={"X-Request-ID": "last-one"})
    assert status == 202
    wait_for(lambda: any(line["message"] == "run finished" for line in log_lines(server)))
    server.stop()
    lines = log_lines(server)
    finished = next(line for line in lines if line["message"] == "run finished")
    assert finished["requestId"] == "last-one"
    exiting = [line for line in lines if line["message"].startswith("Worker exiting")]
    assert exiting and all("requestId" not in line for line in exiting), exiting


def delay_run(ms: int) -> dict:
    return {"definition": definition("root>wait", wait={"type": "delay",
                                                         "payload": {"delayMs": ms}})}


def refusals(metrics: str) -> dict[str, float]:
    """runner_requests_refused_total by status."""
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("runner_requests_refused_total{")}


def test_each_refused_request_is_one_line_and_counted_by_status(tmp_path):
    server = Server(tmp_path, workers=2, MAX_CONCURRENT_RUNS="1")
    server.flask("token", "seed-dev")
    counts = {"400": 1, "401": 2, "402": 1, "403": 1, "413": 1, "415": 1, "429": 1}
    poor = server.flask("token", "create", "poor")  # no compute units
    off = server.flask("token", "create", "off")
    server.flask("token", "disable", "off")
    server.start()
    try:
        def send(request_id, method, path, body=None, token="dev-token", **headers):
            return server.request(method, path, body, token, {"X-Request-ID": request_id,
                                                               **headers})[0]

        assert send("r400", "POST", "/v1/runs/sync", {"definition": {}}) == 400
        assert send("r401", "POST", "/v1/runs/sync", ONE_CU, token=None) == 401
        assert send("r401-unknown", "POST", "/v1/runs/sync", ONE_CU, token="nope") == 401
        assert send("r402", "POST", "/v1/runs/sync", ONE_CU, token=poor) == 402
        assert send("r403", "POST", "/v1/runs/sync", ONE_CU, token=off) == 403
        assert send("r413", "POST", "/v1/runs/sync", {"x": "a" * (1024 * 1024)}) == 413
        assert send("r415", "POST", "/v1/runs/sync", ONE_CU,
                    **{"Content-Type": "text/plain"}) == 415
        assert send("held", "POST", "/v1/runs", delay_run(3000)) == 202  # its worker runs it
        assert send("r429", "POST", "/v1/runs/sync", ONE_CU) == 429  # the other worker
        assert send("r404", "GET", "/v1/runs/run_none") == 404  # not a refusal
        assert send("ok", "GET", "/v1/balance") == 200
        metrics = server.metrics(lambda text: refusals(text) == counts)
    finally:
        server.stop()
    refused = {line["requestId"]: line for line in log_lines(server)
               if line["message"] == "request refused"}
    expected = {"r400": (400, 400228, "dev-token"), "r401": (401, 401000, None),
                "r401-unknown": (401, 401000, None), "r402": (402, 402000, "poor"),
                "r403": (403, 403000, "off"), "r413": (413, 413000, None),
                "r415": (415, 415000, "dev-token"), "r429": (429, 429000, "dev-token")}
    assert {rid: (line["status"], line["code"], line.get("tokenName"))
            for rid, line in refused.items()} == expected
    lines = [line for line in log_lines(server) if line.get("requestId") in expected]
    assert len(lines) == len(expected)  # one line each, no other
    assert refusals(metrics) == counts


def test_a_stopping_host_refuses_connections_at_once_and_finishes_its_run(tmp_path):
    """On TERM, gunicorn's master closes its listening socket and the idle worker exits;
    the worker busy with a run stops listening too. New connections are refused at once
    (what a load balancer or nginx sees: the port is closed, never a 503) while the run
    in flight answers in full."""
    server = Server(tmp_path, workers=2)
    server.flask("token", "seed-dev")
    server.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.request, "POST", "/v1/runs/sync", delay_run(3000))
            wait_for(lambda: running(server))
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            started = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            assert time.monotonic() - started < 1
            assert not pending.done()  # the run was still in flight
            status, body = pending.result(timeout=30)
        assert status == 200 and body["status"] == "success"
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()


def running(server: Server) -> bool:
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"]) as db:
        return db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] > 0


def test_a_reload_keeps_serving_while_the_old_worker_finishes_its_run(tmp_path):
    """HUP: the old workers stop listening as on TERM, but the master's socket stays
    open for the new workers (closing the socket itself would stop the whole host)."""
    server = Server(tmp_path, workers=2, MAX_CONCURRENT_RUNS="0")
    server.flask("token", "seed-dev")
    server.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.request, "POST", "/v1/runs/sync", delay_run(3000))
            wait_for(lambda: running(server))
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            for _ in range(5):
                assert server.request("POST", "/v1/runs/sync", ONE_CU, timeout=5)[0] == 200
            assert not pending.done()
            status, body = pending.result(timeout=30)
        assert status == 200 and body["status"] == "success"
    finally:
        server.stop()


# -- answers compressed by the app (reached without nginx) ------------------------------

GZIP = {"Authorization": "Bearer dev-token", "Content-Type": "application/json",
        "Accept-Encoding": "gzip"}


def big_run(size: int) -> dict:
    """A run whose answer is larger than ``size`` bytes of JSON (its payload, echoed)."""
    return {**ONE_CU, "payload": {"items": [{"sku": f"item-{n}", "qty": n}
                                            for n in range(size // 20)]}}


def test_json_answers_are_gzipped_for_clients_that_accept_it(server):
    status, headers, packed = request(server.port, "POST", "/v1/runs/sync", big_run(4096), GZIP)
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    answer = json.loads(gzip.decompress(packed))
    assert int(headers["Content-Length"]) == len(packed) < len(json.dumps(answer)) / 3
    path = f"/v1/runs/{answer['runId']}"
    status, headers, packed = request(server.port, "GET", path, None, GZIP)  # stored text
    assert headers["Content-Encoding"] == "gzip" and json.loads(gzip.decompress(packed)) == answer
    for refusing in ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0"}, {}):
        status, headers, plain = request(server.port, "GET", path, None,
                                         {**GZIP, **refusing} if refusing else
                                         {"Authorization": GZIP["Authorization"]})
        assert "Content-Encoding" not in headers and json.loads(plain) == answer, refusing
        assert headers["Vary"] == "Accept-Encoding"
    status, headers, body = request(server.port, "GET", "/livez", None, GZIP)  # 36 bytes
    assert "Content-Encoding" not in headers and json.loads(body)["status"] == "ok"


def test_gzip_min_bytes_0_never_compresses(tmp_path):
    server = Server(tmp_path, workers=1, GZIP_MIN_BYTES="0")
    server.flask("token", "seed-dev")
    server.start()
    try:
        status, headers, body = request(server.port, "POST", "/v1/runs/sync", big_run(4096),
                                        GZIP)
    finally:
        server.stop()
    assert status == 200 and "Content-Encoding" not in headers and json.loads(body)["runId"]


def test_streams_are_never_gzipped_and_arrive_event_by_event(server):
    status, headers, events = stream(server.port, "POST", "/v1/runs/sync",
                                     {**big_run(4096), **delay_run(2000)}, GZIP)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert "Content-Encoding" not in headers
    started = next(event.at for event in events if event.name == "run.started")
    finished = next(event.at for event in events if event.name == "run.finished")
    assert finished - started > 1.5  # the first event came as the run began
    assert json.loads(events[-1].data)["status"] == "success"
