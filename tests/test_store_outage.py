"""A PostgreSQL store that goes away under load, on real gunicorn, and comes back."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests import pg
from tests.helpers import definition
from tests.server import Server

pytestmark = pytest.mark.server

# 2 CU, about 0.1 s: runs straddle the moment the database stops.
RUN = {"definition": definition(
    "root>a", "a>wait", a={"type": "log", "payload": {"message": "x"}},
    wait={"type": "delay", "payload": {"delayMs": 100}})}
BALANCE = 100_000
CLIENTS = 6


@pytest.fixture
def own_pg():
    """A cluster this test may stop and start."""
    cluster = pg.Server.throwaway()
    if cluster is None:
        pytest.skip("no PostgreSQL: install Debian's postgresql")
    yield cluster
    cluster.stop()


@pytest.fixture
def service(own_pg, tmp_path):
    server = Server(tmp_path, workers=3, DATABASE_URL=own_pg.create_database(),
                    MAX_CONCURRENT_RUNS="0", STORE_BUSY_MS="1000")
    server.secret = server.flask("token", "create", "load", "--balance", str(BALANCE))
    server.start()
    yield server
    server.stop()


class Load:
    """``CLIENTS`` clients posting runs in a loop; every answer kept with its time."""

    def __init__(self, server: Server):
        self.server, self.answers, self.done = server, [], threading.Event()
        self.pool = ThreadPoolExecutor(CLIENTS)
        self.clients = [self.pool.submit(self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        while not self.done.is_set():
            status, body = self.server.request("POST", "/v1/runs/sync", RUN,
                                               token=self.server.secret)
            self.answers.append((time.monotonic(), status, body))

    def since(self, moment: float) -> list[tuple[int, dict]]:
        return [(status, body) for at, status, body in list(self.answers) if at >= moment]

    def stop(self) -> None:
        self.done.set()
        for client in self.clients:
            client.result()
        self.pool.shutdown()


def ready(server: Server) -> bool:
    return server.request("GET", "/readyz", token=None)[0] == 200


def wait_for(condition, seconds: float) -> float:
    """Seconds until ``condition()`` held; fails past ``seconds``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - start


def books(url: str) -> tuple[int, int, int, int]:
    """The token's balance, its runs still running, the CU they hold, the CU charged."""
    with psycopg.connect(url) as db:
        return db.execute(
            "SELECT balance, (SELECT count(*) FROM runs WHERE status = 'running'), "
            "(SELECT coalesce(sum(reserved), 0) FROM runs), "
            "(SELECT coalesce(sum(total_cu), 0) FROM runs) FROM tokens WHERE name = 'load'"
        ).fetchone()


def test_a_database_that_goes_away_gets_503s_then_the_service_recovers_by_itself(
        own_pg, service):
    load = Load(service)
    try:
        time.sleep(1.5)
        assert sum(status == 200 for _, status, _ in load.answers) > 5, service.log_tail()
        own_pg.pause()
        stopped = time.monotonic()
        wait_for(lambda: not ready(service), 5)
        time.sleep(3)
        during = load.since(stopped + 1)  # answered while the database was surely down
        own_pg.resume()
        restarted = time.monotonic()
        recovered = wait_for(lambda: ready(service) and any(
            status == 200 for status, _ in load.since(restarted)), 30)
        time.sleep(1)
    finally:
        load.stop()
    answers = [(status, body) for _, status, body in load.answers]
    assert {status for status, _ in answers} == {200, 503}, service.log_tail()
    assert during and {status for status, _ in during} == {503}
    assert all(body["code"] == 503000 and "Traceback" not in str(body)
               for status, body in answers if status == 503)
    print(f"{len(answers)} answers: {sum(s == 200 for s, _ in answers)} × 200, "
          f"{sum(s == 503 for s, _ in answers)} × 503; ready again {recovered:.1f} s "
          "after the restart")
    # Runs whose books could not be written while the database was away are settled by
    # the workers themselves: no run left running, no CU left reserved.
    url = service.env["RUNNER_DATABASE_URL"]
    wait_for(lambda: ready(service) and books(url)[1] == 0, 30)
    balance, running, reserved, charged = books(url)
    assert (running, reserved) == (0, 0)
    assert balance == BALANCE - charged
    logged = (service.workdir / "log" / "app.log").read_text()
    assert "unhandled error" not in logged
    print(f"{logged.count('books wait for it')} run(s) settled after the restart; "
          f"{charged} CU charged, balance {balance}")
