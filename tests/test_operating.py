"""What an operator sees of the service on real gunicorn: its log lines, its metrics,
its stop, its compressed answers."""
from __future__ import annotations

import json
import time

import pytest

from tests.helpers import definition
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
