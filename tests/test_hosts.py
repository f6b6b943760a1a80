"""Several hosts, end to end (SPEC §13): two gunicorn instances (different ports, logs,
metrics and host names) on one PostgreSQL database, behind one nginx upstream built
from deploy/nginx.conf (round robin)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from app import config
from tests.helpers import definition
from tests.nginx import NGINX, Nginx, request, stream
from tests.server import Server

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not os.path.exists(NGINX),
                                 reason="nginx is not installed (.ci/run installs it)")]
ONE_CU = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
    "payload": {"message": "hello"}}


def slow(delay_ms: int) -> dict:
    """Three nodes of one attempt each (3 CU reserved); the second waits ``delay_ms``."""
    return {"definition": definition(
        "root>first", "first>wait", "wait>last",
        first={"type": "log", "payload": {"message": "first"}},
        wait={"type": "delay", "payload": {"delayMs": delay_ms}},
        last={"type": "log", "payload": {"message": "last"}})}


def auth(secret: str, **headers: str) -> dict:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json", **headers}


class Hosts:
    """Hosts ``a`` and ``b`` on the database at ``url``; ``proxy(edit)`` puts nginx in
    front of both."""

    def __init__(self, tmp_path, url: str):
        self.tmp_path, self.url, self.proxies = tmp_path, url, []
        self.hosts = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            # No per-token limit: the tests below count answers, not 429s.
            self.hosts[name] = Server(tmp_path / name, workers=3, DATABASE_URL=url,
                                      HOST_ID=f"host-{name}", MAX_CONCURRENT_RUNS="0")
        self.a, self.b = self.hosts["a"], self.hosts["b"]
        self.a.flask("token", "seed-dev")  # also migrates the database once
        for host in self.hosts.values():
            host.start()

    def proxy(self, edit=None) -> Nginx:
        folder = self.tmp_path / f"nginx-{len(self.proxies)}"
        folder.mkdir()
        nginx = Nginx(folder, [self.a.port, self.b.port], edit).start()
        self.proxies.append(nginx)
        return nginx

    def token(self, name: str, balance: int) -> str:
        return self.a.flask("token", "create", name, "--balance", str(balance))

    def query(self, sql: str, *params) -> list[dict]:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as db:
            return db.execute(sql, params).fetchall()

    def balance(self, name: str) -> int:
        return self.query("SELECT balance FROM tokens WHERE name = %s", name)[0]["balance"]

    def stop(self) -> None:
        for nginx in self.proxies:
            nginx.stop()
        for host in self.hosts.values():
            host.stop()


@pytest.fixture
def hosts(tmp_path, pg_url):
    hosts = Hosts(tmp_path, pg_url)
    yield hosts
    hosts.stop()


def post_in_background(port: int, body: dict, headers: dict) -> tuple[threading.Thread, list]:
    """POST /v1/runs/sync from a thread; its answer (or error) lands in the list."""
    answer: list = []

    def send():
        try:
            answer.append(request(port, "POST", "/v1/runs/sync", body, headers))
        except OSError as error:
            answer.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def kill(host: Server) -> None:
    """SIGKILL a host's master and workers, and wait until its port refuses connections:
    the listening socket lives until the last worker has exited, and a request accepted
    meanwhile has reached the dying host (nginx rightly answers it 502, not retried)."""
    host.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", host.port), timeout=0.2).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.02)
    raise AssertionError(f"port {host.port} still accepts connections")


def wait_for_run(hosts: Hosts, request_id: str, attempts: int) -> dict:
    """The running run of this request once it has started ``attempts`` attempts."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = hosts.query("SELECT id, worker_host, status, attempts, reserved FROM runs "
                           "WHERE request_id = %s", request_id)
        if rows and rows[0]["attempts"] >= attempts:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no run of {request_id} with {attempts} attempts started")


def test_concurrent_runs_through_nginx_spend_a_balance_exactly_once(hosts):
    """24 runs at once, 1 CU each, against 7 CU: 7 succeed, 17 get 402, on both hosts."""
    nginx = hosts.proxy()
    secret = hosts.token("seven", 7)
    barrier, answers = threading.Barrier(24), []

    def send(n: int) -> None:
        barrier.wait()
        status, _, body = request(nginx.port, "POST", "/v1/runs/sync", ONE_CU,
                                  auth(secret, **{"X-Request-ID": f"many-{n}"}))
        answers.append((status, json.loads(body)))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    succeeded = [body for status, body in answers if status == 200]
    assert len(answers) == 24 and len(succeeded) == 7
    assert all(body["status"] == "success" and body["totalCu"] == 1 for body in succeeded)
    refused = [body for status, body in answers if status == 402]
    assert len(refused) == 17 and {body["code"] for body in refused} == {402000}
    assert hosts.balance("seven") == 0
    stored = hosts.query("SELECT r.id, r.status, r.total_cu, r.reserved FROM runs r "
                         "JOIN tokens t ON t.id = r.token_id WHERE t.name = 'seven'")
    assert sorted(row["id"] for row in stored) == sorted(body["runId"] for body in succeeded)
    assert all(row["status"] == "success" and row["total_cu"] == 1 and row["reserved"] == 0
               for row in stored)
    upstreams = [line.split('"')[1] for line in nginx.access_lines(24)
                 if line.startswith("POST /v1/runs/sync ")]
    assert len(upstreams) == 24 and all(", " not in used for used in upstreams)  # no retry
    assert {f"127.0.0.1:{hosts.a.port}", f"127.0.0.1:{hosts.b.port}"} == set(upstreams)


def test_a_run_started_on_one_host_is_read_through_the_other_and_nginx(hosts):
    nginx = hosts.proxy()
    status, ran = hosts.a.request("POST", "/v1/runs/sync", ONE_CU)
    assert status == 200 and ran["status"] == "success"
    path = f"/v1/runs/{ran['runId']}"
    assert hosts.b.request("GET", path) == (200, ran)
    both, readers = {f"127.0.0.1:{hosts.a.port}", f"127.0.0.1:{hosts.b.port}"}, set()
    for n in range(1, 7):  # round robin: reads through each host (two, as a rule)
        status, _, body = request(nginx.port, "GET", path, None, auth("dev-token"))
        assert status == 200 and json.loads(body) == ran
        readers = {line.split('"')[1] for line in nginx.access_lines(n)}
        if readers == both:
            break
    assert readers == both
    assert hosts.query("SELECT worker_host FROM runs WHERE id = %s",
                       ran["runId"]) == [{"worker_host": "host-a"}]


def test_a_host_killed_mid_run_leaves_its_run_to_the_other_once_expired(hosts):
    nginx = hosts.proxy()
    secret = hosts.token("ten", 10)
    thread, answer = post_in_background(hosts.a.port, slow(30_000),
                                        auth(secret, **{"X-Request-ID": "killed"}))
    run = wait_for_run(hosts, "killed", attempts=2)  # first done, wait started
    assert run["worker_host"] == "host-a" and run["reserved"] == 3
    assert hosts.balance("ten") == 7
    kill(hosts.a)  # master and workers, SIGKILL: no child_exit, no clean-up
    thread.join(10)
    assert isinstance(answer[0], OSError)  # the connection dropped, no answer

    # Host B answers through nginx (host A is refused, and skipped) and directly.
    for _ in range(4):
        status, _, body = request(nginx.port, "POST", "/v1/runs/sync", ONE_CU,
                                  auth("dev-token"))
        assert status == 200 and json.loads(body)["status"] == "success"
    a, b = f"127.0.0.1:{hosts.a.port}", f"127.0.0.1:{hosts.b.port}"
    tried = [line.split('"')[1] for line in nginx.access_lines(4)]
    # A refused connection never reached a host: that one is passed on to B, once.
    assert set(tried) <= {b, f"{a}, {b}"} and f"{a}, {b}" in tried
    path = f"/v1/runs/{run['id']}"
    # Before its hard limit the run is another host's and may be alive: left running (as
    # it was, or as its first tick wrote it, had that come before the kill).
    status, before = hosts.b.request("GET", path, token=secret)
    assert status == 200 and (before["runId"], before["status"]) == (run["id"], "running")
    assert hosts.balance("ten") == 7

    # Its expiry is the deadline + gunicorn's hard timeout's margin + a margin (120 s by
    # default), by the database's clock: move the run back by that much, as 120 s would.
    expiry = config.run_expiry_s(config.defaults())
    [row] = hosts.query(
        "UPDATE runs SET created_at = created_at - (expires_at - created_at), "
        "expires_at = created_at WHERE id = %s "
        "RETURNING extract(epoch FROM created_at - expires_at)::float8 AS moved", run["id"])
    assert row["moved"] == pytest.approx(-expiry, abs=0.01)
    status, _, body = request(nginx.port, "GET", path, None, auth(secret))  # swept by B
    aborted = json.loads(body)
    assert status == 200 and aborted["status"] == "failure"
    assert aborted["error"]["code"] == "ABORTED" and aborted["totalCu"] == 2
    assert aborted["durationMs"] >= expiry * 1000
    assert hosts.balance("ten") == 8  # 2 started attempts charged, the third released

    hosts.a.start()  # its start-up sweep finds nothing left to abort
    assert "aborted" not in hosts.a.log_tail(1000)
    assert hosts.a.request("GET", path, token=secret) == (200, aborted)
    assert hosts.balance("ten") == 8
    assert hosts.query("SELECT status, total_cu, reserved FROM runs WHERE id = %s", run["id"]) \
        == [{"status": "failure", "total_cu": 2, "reserved": 0}]


@pytest.mark.parametrize("retry_posts", [False, True],
                         ids=["as-shipped", "with-non_idempotent"])
def test_nginx_never_runs_a_request_twice_when_its_host_dies(hosts, retry_posts):
    """deploy/nginx.conf retries only what never reached a host: a POST whose host dies
    mid-run is a 502, run once. The same test with ``non_idempotent`` added (what the
    configuration must never say) sees the run twice, once on each host."""
    edit = (lambda site: site.replace("proxy_next_upstream error;",
                                      "proxy_next_upstream error non_idempotent;")
            ) if retry_posts else None
    nginx = hosts.proxy(edit)
    secret = hosts.token("ten", 10)
    thread, answer = post_in_background(nginx.port, slow(2_000),
                                        auth(secret, **{"X-Request-ID": "once"}))
    run = wait_for_run(hosts, "once", attempts=2)
    kill(hosts.hosts[run["worker_host"].removeprefix("host-")])
    thread.join(30)
    status, _, body = answer[0]
    runs = hosts.query("SELECT worker_host, status FROM runs WHERE request_id = 'once' "
                       "ORDER BY row_id")
    if not retry_posts:
        assert status == 502 and json.loads(body)["code"] == 502000
        assert runs == [{"worker_host": run["worker_host"], "status": "running"}]
        assert hosts.balance("ten") == 7  # its reservation, until it expires
    else:  # the teeth of the test above: a retried POST runs again on the other host
        assert status == 200 and json.loads(body)["status"] == "success"
        assert len(runs) == 2 and runs[0]["worker_host"] != runs[1]["worker_host"]
        assert hosts.balance("ten") == 4


# -- run control across hosts (SPEC §12, §13) ----------------------------------------

def start_without_waiting(host: Server, body: dict, secret: str, request_id: str) -> str:
    """POST /v1/runs straight to ``host``: its run goes on there after the 202."""
    status, started = host.request("POST", "/v1/runs", body, token=secret,
                                   headers={"X-Request-ID": request_id})
    assert status == 202 and started["status"] == "running"
    return started["runId"]


def text(host: Server, path: str, secret: str) -> tuple[int, str]:
    """A GET's status and body text, as stored (not parsed and dumped again)."""
    status, _, body = request(host.port, "GET", path, None, auth(secret))
    return status, body.decode()


def balances(hosts: Hosts, secret: str) -> list[dict]:
    """GET /v1/balance on host A, then on host B."""
    return [host.request("GET", "/v1/balance", token=secret)[1] for host in (hosts.a, hosts.b)]


def finished_lines(host: Server) -> list[tuple[str, str]]:
    """The runs ``host`` has logged as finished, once it has logged one (its run's log
    lines are written together, just after its answer is stored)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in host.log_tail(200).splitlines()
                 if '"run finished"' in line]
        if lines or time.monotonic() > deadline:
            return [(line["runId"], line["status"]) for line in lines]
        time.sleep(0.05)


def test_a_run_in_flight_on_one_host_is_read_followed_and_listed_through_the_other(hosts):
    secret = hosts.token("ten", 10)
    run_id = start_without_waiting(hosts.a, slow(4_000), secret, "elsewhere")
    path = f"/v1/runs/{run_id}"
    deadline, partial = time.monotonic() + 10, {}
    # (Stored from its start with an empty executionState; its first tick writes more.)
    while "wait" not in partial.get("executionState", {}) and time.monotonic() < deadline:
        status, partial = hosts.b.request("GET", path, token=secret)  # its progress, from B
        assert status == 200 and partial["status"] == "running"
        time.sleep(0.05)
    assert list(partial["executionState"]) == ["root", "first", "wait"]  # last not started
    assert partial["executionState"]["first"]["status"] == "success"
    assert partial["executionState"]["wait"]["status"] == "running"
    assert balances(hosts, secret) == [{"balance": 7, "reserved": 3, "used": 0}] * 2

    status, _, events = stream(hosts.b.port, "GET", f"{path}/stream", None, auth(secret))
    assert status == 200
    assert events[0].name == "run.started" and events[-1].name == "run.finished"
    assert events[-1].at - events[0].at > 1  # followed while it ran (about 3 s left)
    finished = [json.loads(e.data)["nodeId"] for e in events if e.name == "node.finished"]
    assert finished == ["root", "first", "wait", "last"]
    assert text(hosts.a, path, secret) == text(hosts.b, path, secret) == (200, events[-1].data)
    assert json.loads(events[-1].data)["status"] == "success"

    status, listed = hosts.b.request("GET", "/v1/runs", token=secret)
    assert status == 200 and listed["nextCursor"] is None
    assert [(run["runId"], run["status"], run["totalCu"]) for run in listed["runs"]] \
        == [(run_id, "success", 3)]
    assert balances(hosts, secret) == [{"balance": 7, "reserved": 0, "used": 3}] * 2
    assert hosts.query("SELECT worker_host FROM runs WHERE id = %s", run_id) \
        == [{"worker_host": "host-a"}]


def test_a_run_on_one_host_is_cancelled_through_the_other(hosts):
    """Cancelled from host B, the run stops on host A at its next tick (half a second):
    the started attempts (first, wait) are charged, last's reservation is released; a
    follower on host B sees it end."""
    secret = hosts.token("ten", 10)
    run_id = start_without_waiting(hosts.a, slow(30_000), secret, "cancel-me")
    run = wait_for_run(hosts, "cancel-me", attempts=2)  # first done, wait started
    assert run["worker_host"] == "host-a" and run["id"] == run_id
    path = f"/v1/runs/{run_id}"
    followed: list = []
    follower = threading.Thread(target=lambda: followed.append(
        stream(hosts.b.port, "GET", f"{path}/stream", None, auth(secret))))
    follower.start()

    asked = time.monotonic()
    status, cancelled = hosts.b.request("POST", f"{path}/cancel", token=secret)
    took = time.monotonic() - asked
    assert status == 200 and took < 1.5  # stopped within 1 s (a tick), with slack
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "CANCELLED"
    state = cancelled["executionState"]
    assert state["first"]["status"] == "success"
    assert state["wait"]["status"] == "failure" and state["wait"]["error"]["code"] == "CANCELLED"
    assert state["last"]["status"] == "skipped" and state["last"]["reason"] == "cancelled"
    assert cancelled["totalCu"] == 2
    assert finished_lines(hosts.a) == [(run_id, "cancelled")]  # stopped on host A

    follower.join(15)
    status, _, events = followed[0]
    assert status == 200 and events[-1].name == "run.finished"
    assert text(hosts.b, path, secret) == (200, events[-1].data)
    assert json.loads(events[-1].data) == cancelled

    assert balances(hosts, secret) == [{"balance": 8, "reserved": 0, "used": 2}] * 2
    assert hosts.query("SELECT status, total_cu, reserved FROM runs WHERE id = %s", run_id) \
        == [{"status": "cancelled", "total_cu": 2, "reserved": 0}]
    status, listed = hosts.b.request("GET", "/v1/runs?status=cancelled", token=secret)
    assert [run["runId"] for run in listed["runs"]] == [run_id]
    status, again = hosts.a.request("POST", f"{path}/cancel", token=secret)
    assert status == 409 and again["code"] == 409000
