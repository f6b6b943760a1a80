"""SPEC §12 on real gunicorn: a sync run streamed as Server-Sent Events, a run started
without waiting, and a run followed from another worker.

Streams are read as they come (``Stream``), each event with the time it arrived, so
order, replay and keep-alives are checked as a client sees them. Cancelling, listing
and the balance endpoint have tests of their own (tests/test_run_control.py).
"""
from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from app import config, runs
from app.redact import REDACTED
from app.store import open_store
from app.store.contract import Balance
from app.validation import Limits, check_request
from tests.helpers import definition
from tests.server import Server

pytestmark = pytest.mark.server

KEEP_ALIVE_MS = 300  # the module server's keep-alive interval (RUNNER_STREAM_KEEPALIVE_MS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Three workers with the test-only node types; two runs or streams in flight per
    token (a run and a follower of it)."""
    server = Server(tmp_path_factory.mktemp("streams"), workers=3, app="tests.testapp:app",
                    MAX_CONCURRENT_RUNS="2", STREAM_KEEPALIVE_MS=str(KEEP_ALIVE_MS))
    server.flask("token", "seed-dev")
    server.start()
    yield server
    server.stop()


# -- reading streams ---------------------------------------------------------------

_opened: list[Stream] = []


@pytest.fixture(autouse=True)
def _close_streams():
    yield
    while _opened:
        _opened.pop().close()


@dataclass
class Event:
    name: str | None  # None: a comment line
    data: str
    id: int | None
    at: float  # monotonic, when it arrived

    @property
    def value(self):
        return json.loads(self.data)


class Stream:
    """One request whose answer is read line by line as it arrives."""

    def __init__(self, server: Server, method: str, path: str, body: dict | None = None,
                 token: str | None = "dev-token", accept: str = "text/event-stream",
                 receive_buffer: int | None = None, headers: dict | None = None):
        """``receive_buffer``: the client's socket buffer (SO_RCVBUF), small for a client
        that is slow to read (the answer is then read only once ``response`` is asked)."""
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        if receive_buffer:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", server.port))
            self.connection.sock = sock
        headers = {"Accept": accept, **(headers or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, None if body is None else json.dumps(body),
                                headers)
        self.socket = self.connection.sock  # (the response keeps it after the headers)
        self.raw = b""  # everything read so far
        _opened.append(self)
        self._response = None
        if not receive_buffer:
            self.response  # noqa: B018 - the status and headers, now

    @property
    def response(self) -> http.client.HTTPResponse:
        if self._response is None:
            self._response = self.connection.getresponse()
            self.status = self._response.status
            self.type = self._response.getheader("Content-Type", "")
        return self._response

    def events(self):
        """The events and comments as they arrive, until the answer ends."""
        fields: dict[str, str] = {}
        while line := self.response.readline():
            self.raw += line
            text = line.decode().rstrip("\n")
            if text.startswith(":"):
                yield Event(None, text[1:].strip(), None, time.monotonic())
            elif text:
                name, _, value = text.partition(": ")
                assert name not in fields, f"{name!r} twice in one event"
                fields[name] = value
            elif fields:
                yield Event(fields.get("event"), fields.get("data", ""),
                            int(fields["id"]) if "id" in fields else None, time.monotonic())
                fields = {}
        assert not fields, "the stream ended inside an event"

    def until(self, found: Callable[[Event], bool]) -> list[Event]:
        """Events up to the first for which ``found`` is true (that one included)."""
        seen = []
        for event in self.events():
            seen.append(event)
            if found(event):
                return seen
        raise AssertionError(f"the stream ended first: {[e.name for e in seen]}")

    def all(self) -> list[Event]:
        return list(self.events())

    def json(self):
        return json.loads(self.response.read())

    def close(self) -> None:
        """Leave, as a client that goes away does (or let go of a finished answer)."""
        with contextlib.suppress(OSError):  # (closed already once read to its end)
            self.socket.shutdown(socket.SHUT_RDWR)
        if self._response is not None:
            self._response.close()
        self.socket.close()
        self.connection.close()


def named(events: list[Event]) -> list[Event]:
    """The events, without the comment lines."""
    return [event for event in events if event.name is not None]


def of_node(events: list[Event], node_id: str) -> list[tuple[str, dict]]:
    return [(event.name, event.value) for event in named(events)
            if event.name.startswith("node.") and event.value["nodeId"] == node_id]


# -- plain requests ------------------------------------------------------------------

def get_text(server: Server, path: str, token: str = "dev-token") -> tuple[int, str]:
    request = urllib.request.Request(server.base + path,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def new_token(server: Server, name: str, balance: int = 1000) -> str:
    return server.flask("token", "create", name, "--balance", str(balance))


def balance(server: Server, token: str) -> dict:
    status, body = server.request("GET", "/v1/balance", token=token)
    assert status == 200
    return body


def wait_for(check, timeout: float = 20, every: float = 0.05):
    """The first true value of ``check()`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


def final(server: Server, run_id: str, token: str = "dev-token", timeout: float = 60) -> dict:
    """The run once it has finished (GET until it is no longer running)."""
    def finished():
        status, body = server.request("GET", f"/v1/runs/{run_id}", token=token)
        return body if status == 200 and body["status"] != "running" else None
    return wait_for(finished, timeout=timeout)


TIMES = {"runId", "startedAt", "finishedAt", "durationMs", "triggeredAt", "loggedAt"}


def without_times(value):
    """``value`` with every time, duration and run id blanked, order kept."""
    if isinstance(value, dict):
        return {key: None if key in TIMES else without_times(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [without_times(item) for item in value]
    return value


def log_node(message: str = "x") -> dict:
    return {"type": "log", "payload": {"message": message}}


def delay(ms: int, **more) -> dict:
    return {"type": "delay", "payload": {"delayMs": ms}, **more}


# root → a (log) → b (delay), c (log, beside b) → d (log, after both)
DIAMOND = {"definition": definition(
    "root>a", "a>b", "a>c", "b>d", "c>d", a=log_node("a ✓ é"), b=delay(300), c=log_node("c"),
    d=log_node("d"))}


# -- a streamed sync run ---------------------------------------------------------------

def test_a_streamed_run_gives_its_events_in_order_ending_with_the_stored_body(server):
    stream = Stream(server, "POST", "/v1/runs/sync", DIAMOND)
    assert stream.status == 200 and stream.type.startswith("text/event-stream")
    assert stream.response.getheader("Cache-Control") == "no-cache"
    assert stream.response.getheader("X-Accel-Buffering") == "no"
    events = named(stream.all())
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[0].name == "run.started" and events[-1].name == "run.finished"
    run_id = events[0].value["runId"]
    body = events[-1].value
    assert body["runId"] == run_id and body["status"] == "success"
    assert {event.name for event in events[1:-1]} == {"node.started", "node.finished"}
    # The run.finished data is the stored run, byte for byte.
    assert get_text(server, f"/v1/runs/{run_id}") == (200, events[-1].data)
    # Each node: its attempt's node.started, then node.finished carrying its entry.
    for node_id, entry in body["executionState"].items():
        expected = [("node.finished", {"nodeId": node_id, "state": entry})]
        if node_id != "root":  # (the trigger makes no attempt)
            expected.insert(0, ("node.started", {"nodeId": node_id, "attempt": 1,
                                                 "startedAt": entry["startedAt"]}))
        assert of_node(events, node_id) == expected
    order = [(event.name, event.value["nodeId"]) for event in events[1:-1]]
    assert order.index(("node.finished", "a")) < order.index(("node.started", "b"))
    assert order.index(("node.finished", "c")) < order.index(("node.finished", "b")) \
        < order.index(("node.started", "d"))


def test_run_finished_carries_what_the_plain_request_answers(server):
    """The same definition, streamed and not: the same body but for times and ids."""
    status, plain = get_plain(server, DIAMOND)
    assert status == 200
    streamed = named(Stream(server, "POST", "/v1/runs/sync", DIAMOND).all())[-1]
    assert streamed.name == "run.finished"
    assert json.dumps(without_times(json.loads(streamed.data))) == \
        json.dumps(without_times(json.loads(plain)))


def get_plain(server: Server, body: dict, path: str = "/v1/runs/sync",
              token: str = "dev-token") -> tuple[int, str]:
    """A plain (not streamed) run: its status and body text."""
    request = urllib.request.Request(server.base + path, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def test_a_node_that_retries_streams_node_retrying_between_its_attempts(server):
    body = {"definition": definition("root>flaky", flaky={
        "type": "t-flaky", "payload": {"failures": 2},
        "retry": {"maxAttempts": 3, "initialDelayMs": 200}})}
    events = named(Stream(server, "POST", "/v1/runs/sync", body).all())
    flaky = of_node(events, "flaky")
    assert [(name, value.get("attempt")) for name, value in flaky] == [
        ("node.started", 1), ("node.retrying", 1), ("node.started", 2), ("node.retrying", 2),
        ("node.started", 3), ("node.finished", None)]
    for attempt, (_, retrying) in ((1, flaky[1]), (2, flaky[3])):
        assert retrying["error"] == {"code": "NETWORK_ERROR", "retryable": True,
                                     "message": f"attempt {attempt} failed"}
        assert retrying["retryInMs"] >= 200
    entry = flaky[-1][1]["state"]
    assert entry["status"] == "success" and entry["attempts"] == 3
    assert events[-1].value["totalCu"] == 3


def test_streamed_events_are_redacted_like_the_answer(server):
    secret, key = "hunter2-prop-value", "s3cr3t-api-key"
    body = {"definition": {**definition(
        "root>say", "say>check", say={"type": "log", "payload": {
            "message": "pw={{$props.dbPass}} key={{root.result.apiKey}}"}},
        check={"type": "t-fail-if", "payload": {"fail": "{{$props.dbPass}}",
                                                "equals": "{{$props.dbPass}}"},
               "retry": {"maxAttempts": 2, "initialDelayMs": 10,
                         "retryOn": ["HTTP_ERROR"]}}),
        "props": {"dbPass": "default-pass"}, "sensitivePropKeys": ["dbPass"]},
        "propValues": {"dbPass": secret}, "payload": {"apiKey": key, "user": "ann"}}
    stream = Stream(server, "POST", "/v1/runs/sync", body,
                    headers={"X-Request-ID": "streamed-secrets"})
    events = named(stream.all())
    raw = stream.raw.decode()
    assert secret not in raw and key not in raw and "default-pass" not in raw
    say = of_node(events, "say")[-1][1]["state"]
    assert say["result"]["message"] == f"pw={REDACTED} key={REDACTED}"
    retrying = [value for name, value in of_node(events, "check") if name == "node.retrying"]
    assert retrying and retrying[0]["error"]["message"] == f"failed on '{REDACTED}'"
    assert events[-1].value["executionState"]["root"]["result"]["apiKey"] == REDACTED
    # Its log lines (written between the stream's writes): its request's, redacted too.
    run_id = events[0].value["runId"]
    assert _logged(server, run_id) == "failure"
    log = (server.workdir / "log" / "app.log").read_text()
    assert secret not in log and key not in log
    lines = [json.loads(line) for line in log.splitlines()]
    lines = [line for line in lines if line.get("runId") == run_id]
    assert [line["message"] for line in lines] == [f"pw={REDACTED} key={REDACTED}",
                                                   "run finished"]
    assert {line["requestId"] for line in lines} == {"streamed-secrets"}


def test_loop_instances_are_streamed_as_they_start_and_finish(server):
    body = {"definition": definition(
        "root>each", "each>after", "check>mark",
        each={"type": "for-each", "loopBody": ["check"],
              "payload": {"array": "{{root.result.items}}"}},
        check=log_node("#{{$index}}: {{$item}}"), mark=delay(50), after=log_node("done")),
        "payload": {"items": ["x", "y", "z"]}}
    events = named(Stream(server, "POST", "/v1/runs/sync", body).all())
    state = events[-1].value["executionState"]
    order = [(event.name, event.value["nodeId"]) for event in events[1:-1]]
    instances = [f"{node}[{i}]" for i in range(3) for node in ("check", "mark")]
    assert [node for _, node in order if "[" in node] == \
        [node for node in instances for _ in ("started", "finished")]  # one at a time
    assert order.index(("node.started", "each")) < order.index(("node.started", "check[0]"))
    assert order.index(("node.finished", "mark[2]")) < order.index(("node.finished", "each")) \
        < order.index(("node.started", "after"))
    for instance in instances:
        assert of_node(events, instance)[-1] == ("node.finished", {
            "nodeId": instance, "state": state[instance]})
    assert state["check[1]"]["result"]["message"] == "#1: y"
    assert state["check[2]"]["iteration"] == 2 and state["check[2]"]["loop"] == "each"


def test_a_quiet_stretch_carries_keep_alive_comments(server):
    events = Stream(server, "POST", "/v1/runs/sync",
                    {"definition": definition("root>wait", wait=delay(2000))}).all()
    started = next(i for i, e in enumerate(events) if e.name == "node.started")
    finished = next(i for i, e in enumerate(events) if e.name == "node.finished"
                    and e.value["nodeId"] == "wait")
    quiet = events[started:finished + 1]
    comments = [event for event in quiet if event.name is None]
    assert len(comments) >= 3 and {event.data for event in comments} == {"keep-alive"}
    # Never quiet much longer than the interval (the engine hands over a batch about
    # every half second; slack for a busy machine), never for 15 s.
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(quiet)]
    assert max(gaps) < 2, gaps
    # Comments take no id: the events stay numbered 1, 2, 3…
    ids = [event.id for event in events if event.name is not None]
    assert ids == list(range(1, len(ids) + 1))


def test_a_streamed_run_cancelled_from_another_worker_ends_with_its_final_body(server):
    stream = Stream(server, "POST", "/v1/runs/sync", slow(20_000))
    seen = stream.until(lambda e: e.name == "node.started" and e.value["nodeId"] == "wait")
    run_id = seen[0].value["runId"]
    status, answer = server.request("POST", f"/v1/runs/{run_id}/cancel", {})
    assert status == 200 and answer["status"] == "cancelled"
    events = named(stream.all())
    assert [(e.name, e.value.get("nodeId")) for e in events] == [
        ("node.finished", "wait"), ("run.finished", None)]
    assert events[0].value["state"]["error"]["code"] == "CANCELLED"
    assert events[-1].value["status"] == "cancelled"
    assert get_text(server, f"/v1/runs/{run_id}") == (200, events[-1].data)


def test_the_b3os_route_streams_without_the_envelope(server):
    stream = Stream(server, "POST", "/b3os/v1/runs/sync", DIAMOND)
    events = named(stream.all())
    assert stream.status == 200 and stream.type.startswith("text/event-stream")
    assert stream.raw.startswith(b"id: 1\nevent: run.started\n")
    assert events[-1].name == "run.finished"
    body = events[-1].value
    assert body["status"] == "success" and "code" not in body and "data" not in body
    assert get_text(server, f"/v1/runs/{body['runId']}")[1] == events[-1].data


# Refusals before a run: ordinary JSON answers (SPEC §6), never a stream.

def slow(ms: int = 1500, run_id: str | None = None) -> dict:
    body = {"definition": definition("root>a", "a>wait", a=log_node(), wait=delay(ms))}
    if run_id:
        body["runId"] = run_id
    return body


@pytest.mark.parametrize("path", ["/v1/runs/sync", "/v1/runs"])
@pytest.mark.parametrize("refusal", ["invalid", "token", "balance", "too_many"])
def test_refusals_before_the_run_are_plain_json(server, path, refusal):
    token, body, busy, busy_ids = "dev-token", slow(10), [], []
    if refusal == "invalid":
        body = {"definition": definition("root>a", a={"type": "log", "payload": {}})}
    elif refusal == "token":
        token = "not-a-token"
    elif refusal == "balance":
        token = new_token(server, f"poor-{path.count('sync')}", balance=1)
    else:
        token = new_token(server, f"busy-{path.count('sync')}")
        busy = [Stream(server, "POST", "/v1/runs", slow(1500), token=token,
                       accept="application/json") for _ in range(2)]  # the token's limit
        assert [started.status for started in busy] == [202, 202]
        busy_ids = [started.json()["runId"] for started in busy]
    before = balance(server, token) if refusal != "token" else None
    started = time.monotonic()
    stream = Stream(server, "POST", path, body, token=token)
    expected = {"invalid": 400, "token": 401, "balance": 402, "too_many": 429}[refusal]
    assert stream.status == expected and stream.type == "application/json"
    answer = stream.json()
    assert answer["code"] // 1000 == expected and answer["requestId"]
    assert time.monotonic() - started < 5  # answered, not held
    if before is not None:
        assert balance(server, token) == before  # nothing reserved
    for started in busy:
        started.close()
    for busy_id in busy_ids:
        assert final(server, busy_id, token)["status"] == "success"


# -- a client that leaves --------------------------------------------------------------

def test_a_client_that_leaves_mid_stream_leaves_the_run_to_finish_stored_and_charged(
        server):
    token = new_token(server, "leaves", balance=100)
    body = {"definition": definition("root>a", "a>wait", "wait>b", a=log_node(),
                                     wait=delay(1500), b=log_node("after"))}
    stream = Stream(server, "POST", "/v1/runs/sync", body, token=token)
    seen = stream.until(lambda e: e.name == "node.started" and e.value["nodeId"] == "wait")
    run_id = seen[0].value["runId"]
    stream.close()
    run = final(server, run_id, token)
    assert run["status"] == "success" and run["totalCu"] == 3
    assert [entry["status"] for entry in run["executionState"].values()] == ["success"] * 4
    assert balance(server, token) == {"balance": 97, "reserved": 0, "used": 3}
    assert _logged(server, run_id) == "success"


def test_a_client_that_leaves_before_the_first_event_leaves_the_run_to_finish(server):
    token = new_token(server, "gone", balance=100)
    body = slow(800, run_id="run_unwatched")
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/runs/sync HTTP/1.1\r\nHost: x\r\n"
                     b"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(data) + data)
    run = final(server, "run_unwatched", token)
    assert run["status"] == "success" and run["totalCu"] == 2
    assert balance(server, token) == {"balance": 98, "reserved": 0, "used": 2}
    assert _logged(server, "run_unwatched") == "success"


@pytest.mark.parametrize("read_until", ["run.started", "node.started"])
def test_a_run_whose_stream_is_closed_runs_on_and_is_stored_and_charged(tmp_path, read_until):
    """``runs.Life.passes`` closed (the client left) after its first event, or mid-run:
    closing it runs the run to its end, unseen, its books written."""
    store = open_store(f"sqlite:///{tmp_path / 'runner.sqlite3'}")
    store.migrate()
    token = store.token(store.create_token("closed", 10))
    request = check_request(slow(300), Limits())
    life = runs.Life(store, config.defaults(), request, token.id, "request-1",
                     time.monotonic(), stream=True)
    life.reserve()
    passes = life.passes()
    names = []
    while read_until not in names:
        names += [name for name, _ in next(passes)]
    passes.close()
    assert life.outcome.status == "success" and life.outcome.total_cu == 2
    stored = json.loads(store.run_text(life.run_id, token.id))
    assert stored["status"] == "success" and stored["executionState"]["wait"]["attempts"] == 1
    assert store.balance(token.id) == Balance(balance=8, reserved=0, used=2)


def test_the_last_passs_events_come_with_run_finished_after_the_run_is_stored(tmp_path):
    """``runs.Life.passes``: the events of the engine's last pass are written together
    with ``run.finished`` (one batch, the run stored first), every event once, in order."""
    store = open_store(f"sqlite:///{tmp_path / 'runner.sqlite3'}")
    store.migrate()
    token = store.token(store.create_token("last", 10))
    request = check_request(DIAMOND, Limits())
    life = runs.Life(store, config.defaults(), request, token.id, "request-1",
                     time.monotonic(), stream=True)
    life.reserve()
    batches = []
    for batch in life.passes():
        if batch and batch[-1][0] == "run.finished":  # the run is stored by then
            assert store.run_text(life.run_id, token.id) == batch[-1][1]
        batches.append([(name, json.loads(data)) for name, data in batch])
    assert [name for name, _ in batches[0]] == ["run.started"]
    assert [(name, data.get("nodeId")) for name, data in batches[-1]][-3:] == [
        ("node.started", "d"), ("node.finished", "d"), ("run.finished", None)]
    events = [(name, data.get("nodeId")) for batch in batches for name, data in batch]
    assert events[0] == ("run.started", None) and events[-1] == ("run.finished", None)
    assert sorted(events[1:-1]) == sorted(
        [("node.finished", "root")] + [(name, node) for node in "abcd"
                                       for name in ("node.started", "node.finished")])
    assert events.index(("node.finished", "b")) < events.index(("node.started", "d"))


def _logged(server: Server, run_id: str) -> str | None:
    """The status in the run's summary line of the shared log file."""
    return _summary_line(server, run_id)["status"]


def _summary_line(server: Server, run_id: str) -> dict:
    """The run's summary line (``run finished``) in the shared log file."""
    path = server.workdir / "log" / "app.log"

    def line():
        for text in path.read_text().splitlines():
            record = json.loads(text)
            if record.get("runId") == run_id and record.get("message") == "run finished":
                return record
        return None
    return wait_for(line, timeout=5)


def test_a_client_slow_to_read_does_not_hold_up_the_run(server):
    """A client that reads nothing while 24 events of 250 kB each are made (more than
    the sockets' buffers hold): the run goes on, its partial state stored as it goes,
    and ends as quickly as unwatched; the client then reads every event."""
    body = {"runId": "run_unread", "definition": definition(
        "root>each", "big>wait",
        each={"type": "for-each", "loopBody": ["big"],
              "payload": {"array": "{{root.result.items}}"}},
        big={"type": "t-big", "payload": {"failures": 250_000}}, wait=delay(20)),
        "payload": {"items": list(range(24))}}
    started = time.monotonic()
    stream = Stream(server, "POST", "/v1/runs/sync", body, receive_buffer=4096)
    run = final(server, "run_unread", timeout=15)
    assert run["status"] == "success" and time.monotonic() - started < 10
    events = named(stream.all())
    assert stream.status == 200
    assert len([e for e in events if e.name == "node.finished"
                and e.value["nodeId"].startswith("big[")]) == 24
    assert events[-1].name == "run.finished"
    assert get_text(server, "/v1/runs/run_unread") == (200, events[-1].data)


# -- starting without waiting ---------------------------------------------------------------

def test_a_run_started_without_waiting_is_answered_at_once_then_runs(server):
    token = new_token(server, "async", balance=100)
    started = time.monotonic()
    stream = Stream(server, "POST", "/v1/runs", slow(2000), token=token,
                    accept="application/json", headers={"X-Request-ID": "unwaited-1"})
    answer = stream.json()
    answered = time.monotonic() - started
    assert stream.status == 202 and answered < 1.5  # the run takes 2 s
    assert list(answer) == ["runId", "status"] and answer["status"] == "running"
    run_id = answer["runId"]
    assert stream.response.getheader("Location") == f"/v1/runs/{run_id}"
    status, running = server.request("GET", f"/v1/runs/{run_id}", token=token)
    assert status == 200 and running["status"] == "running"
    assert balance(server, token)["reserved"] == 2
    run = final(server, run_id, token)
    assert run["status"] == "success" and run["totalCu"] == 2
    assert run["executionState"]["wait"]["durationMs"] >= 2000
    assert balance(server, token) == {"balance": 98, "reserved": 0, "used": 2}
    logged = _summary_line(server, run_id)  # written after the answer: still its request's
    assert logged["status"] == "success" and logged["requestId"] == "unwaited-1"
    stream.close()


def test_a_run_started_without_waiting_is_killed_with_its_worker_aborted_and_charged(
        server):
    """SIGKILL after the 202: ABORTED, charged for its started attempts (the log node and
    the delay's first attempt), the rest of its reservation released."""
    token = new_token(server, "killed", balance=100)
    body = {"runId": "run_killed", "definition": definition(
        "root>a", "a>wait", a=log_node(), wait=delay(20_000, retry={"maxAttempts": 3}))}
    assert server.request("POST", "/v1/runs", body, token=token)[0] == 202
    store = server.env["RUNNER_STORE_PATH"]

    def running_worker():
        with sqlite3.connect(store) as db:
            row = db.execute("SELECT worker_pid, attempts FROM runs WHERE id = 'run_killed' "
                             "AND status = 'running'").fetchone()
        return row[0] if row and row[1] >= 2 else None  # the delay has started
    pid = wait_for(running_worker)
    assert pid in server.worker_pids()
    assert balance(server, token)["reserved"] == 4
    os.kill(pid, signal.SIGKILL)
    run = final(server, "run_killed", token)
    assert run["status"] == "failure" and run["error"]["code"] == "ABORTED"
    assert run["totalCu"] == 2
    assert balance(server, token) == {"balance": 98, "reserved": 0, "used": 2}
    wait_for(lambda: len(server.worker_pids()) == 3 and pid not in server.worker_pids())


def test_runs_started_without_waiting_or_streamed_end_at_the_run_deadline(make_server):
    server = make_server(2, RUN_DEADLINE_MS="1000")
    token = new_token(server, "deadline", balance=100)
    body = {"definition": definition("root>a", "a>wait", a=log_node(),
                                     wait=delay(5000, retry={"maxAttempts": 3}))}
    status, answer = server.request("POST", "/v1/runs", body, token=token)
    assert status == 202
    streamed = named(Stream(server, "POST", "/v1/runs/sync", body, token=token).all())
    for run in (final(server, answer["runId"], token), streamed[-1].value):
        assert run["status"] == "failure" and run["error"]["code"] == "RUN_TIMEOUT"
        assert run["executionState"]["wait"]["error"]["code"] == "TIMEOUT"
        assert run["totalCu"] == 2 and run["durationMs"] < 3000
    assert streamed[-1].name == "run.finished"
    assert balance(server, token) == {"balance": 96, "reserved": 0, "used": 4}


def test_the_hard_time_limit_mid_stream_ends_it_with_an_error_event(make_server):
    """gunicorn's hard timeout (2 s here, below the run deadline on purpose) stops a
    streamed run and a run started without waiting: each is aborted, charged for its
    started attempts; the stream's last event says so."""
    server = make_server(2, env={"GUNICORN_TIMEOUT": "2"}, RUN_DEADLINE_MS="20000")
    token = new_token(server, "hard", balance=100)
    body = {"definition": definition("root>a", "a>wait", a=log_node(),
                                     wait=delay(8000, retry={"maxAttempts": 3}))}
    assert server.request("POST", "/v1/runs", {**body, "runId": "run_unwaited"},
                          token=token)[0] == 202
    stream = Stream(server, "POST", "/v1/runs/sync", {**body, "runId": "run_streamed"},
                    token=token)
    events = named(stream.all())
    assert events[-1].name == "error" and events[-1].id == len(events)
    error = events[-1].value
    assert error["code"] == 503000 and error["runId"] == "run_streamed" and error["requestId"]
    for run_id in ("run_unwaited", "run_streamed"):
        run = final(server, run_id, token)
        assert run["status"] == "failure" and run["error"]["code"] == "ABORTED"
        assert run["totalCu"] == 2
    assert balance(server, token) == {"balance": 96, "reserved": 0, "used": 4}
    assert get_plain(server, DIAMOND)[0] == 200  # the workers were replaced


def test_a_store_that_cannot_be_written_at_the_end_of_a_streamed_run_ends_it_with_an_error(
        make_server):
    """The run's final state cannot be stored (the database is locked past
    RUNNER_STORE_BUSY_MS): the stream ends with the error the plain request would answer
    (503), and the run's books are written once the store is back (SPEC §13)."""
    server = make_server(1, STORE_BUSY_MS="200")
    token = new_token(server, "locked", balance=100)
    stream = Stream(server, "POST", "/v1/runs/sync", slow(1500, "run_locked"), token=token)
    stream.until(lambda e: e.name == "node.started" and e.value["nodeId"] == "wait")
    with sqlite3.connect(server.env["RUNNER_STORE_PATH"], isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")  # every write waits, and gives up after 200 ms
        events = named(stream.all())
        db.execute("ROLLBACK")
    assert [e.name for e in events][-2:] == ["node.finished", "error"]
    assert events[-1].value["code"] == 503000 and events[-1].value["requestId"]
    assert server.request("GET", "/readyz", token=None)[0] == 200  # settles the books
    run = final(server, "run_locked", token)
    assert run["status"] == "success" and run["totalCu"] == 2
    assert balance(server, token) == {"balance": 98, "reserved": 0, "used": 2}


# -- following --------------------------------------------------------------------------

def test_a_follower_replays_the_run_so_far_then_streams_the_rest(server):
    token = new_token(server, "followed")
    body = {"definition": definition("root>a", "a>wait", "wait>b", a=log_node(),
                                     wait=delay(2000), b=log_node("after"))}
    status, answer = server.request("POST", "/v1/runs", body, token=token)
    assert status == 202
    run_id = answer["runId"]

    def waiting():
        run = server.request("GET", f"/v1/runs/{run_id}", token=token)[1]
        return run.get("executionState", {}).get("wait", {}).get("status") == "running"
    wait_for(waiting)
    asked = time.monotonic()
    stream = Stream(server, "GET", f"/v1/runs/{run_id}/stream", token=token)
    assert stream.status == 200 and stream.type.startswith("text/event-stream")
    events = stream.all()
    replayed = stream_prefix(events, lambda e: e.name == "node.started"
                             and e.value["nodeId"] == "wait")
    assert [(e.name, e.value.get("nodeId")) for e in named(replayed)] == [
        ("run.started", None), ("node.finished", "root"), ("node.started", "a"),
        ("node.finished", "a"), ("node.started", "wait")]
    assert replayed[-1].at - asked < 2  # at once (polled every 0.25 s)
    comments = [e for e in events[len(replayed):] if e.name is None]
    assert len(comments) >= 2 and {e.data for e in comments} == {"keep-alive"}
    rest = named(events[len(replayed):])
    assert [(e.name, e.value.get("nodeId")) for e in rest[:-1]] == [
        ("node.finished", "wait"), ("node.started", "b"), ("node.finished", "b")]
    assert rest[-1].at - replayed[-1].at > 0.5  # streamed as it happened
    assert rest[-1].name == "run.finished"
    assert get_text(server, f"/v1/runs/{run_id}", token) == (200, rest[-1].data)
    assert rest[-1].value["status"] == "success"
    events = named(events)
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    state = rest[-1].value["executionState"]
    for node_id in state:
        assert of_node(events, node_id)[-1] == ("node.finished",
                                                {"nodeId": node_id, "state": state[node_id]})


def test_a_run_followed_as_soon_as_it_is_started_gives_all_of_its_events(server):
    """Followed before its first partial state is written (it is stored as its runId and
    status only until then)."""
    status, answer = server.request("POST", "/v1/runs", slow(800))
    assert status == 202
    stream = Stream(server, "GET", f"/v1/runs/{answer['runId']}/stream")
    assert stream.status == 200
    events = named(stream.all())
    assert [(e.name, e.value.get("nodeId")) for e in events] == [
        ("run.started", None), ("node.finished", "root"), ("node.started", "a"),
        ("node.finished", "a"), ("node.started", "wait"), ("node.finished", "wait"),
        ("run.finished", None)]
    assert get_text(server, f"/v1/runs/{answer['runId']}") == (200, events[-1].data)


def stream_prefix(events: list[Event], last: Callable[[Event], bool]) -> list[Event]:
    for i, event in enumerate(events):
        if event.name is not None and last(event):
            return events[:i + 1]
    raise AssertionError("not found")


def test_following_a_finished_run_gives_its_events_at_once(server):
    plain = get_plain(server, DIAMOND)[1]
    run = json.loads(plain)
    asked = time.monotonic()
    events = named(Stream(server, "GET", f"/v1/runs/{run['runId']}/stream").all())
    assert time.monotonic() - asked < 2
    expected = [("run.started", None)]
    for node_id, entry in run["executionState"].items():
        expected += [("node.started", node_id)] * entry.get("attempts", 0)
        expected.append(("node.finished", node_id))
    expected.append(("run.finished", None))
    assert [(e.name, e.value.get("nodeId")) for e in events] == expected
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[0].name == "run.started" and events[0].value == {"runId": run["runId"]}
    assert events[-1].name == "run.finished" and events[-1].data == plain
    for node_id, entry in run["executionState"].items():
        assert of_node(events, node_id)[-1] == ("node.finished",
                                                {"nodeId": node_id, "state": entry})


def test_following_an_unknown_run_or_another_tokens_is_404(server):
    run = json.loads(get_plain(server, DIAMOND)[1])
    other = new_token(server, "other")
    for token, run_id in ((other, run["runId"]), ("dev-token", "run_nothing_here")):
        stream = Stream(server, "GET", f"/v1/runs/{run_id}/stream", token=token)
        assert stream.status == 404 and stream.type == "application/json"
        assert stream.json()["code"] == 404000


def test_following_and_streaming_on_a_postgresql_store(make_server, pg_url):
    """The same through PostgreSQL (SPEC §13): partial states, followers, final texts."""
    server = make_server(3, DATABASE_URL=pg_url, MAX_FOLLOWERS="1")
    token = new_token(server, "pg")
    status, answer = server.request("POST", "/v1/runs", slow(1500), token=token)
    assert status == 202
    assert balance(server, token) == {"balance": 998, "reserved": 2, "used": 0}
    follower = Stream(server, "GET", f"/v1/runs/{answer['runId']}/stream", token=token)
    assert follower.status == 200
    refused = Stream(server, "GET", f"/v1/runs/{answer['runId']}/stream", token=token)
    assert refused.status == 429
    followed = named(follower.all())
    assert [(e.name, e.value.get("nodeId")) for e in followed][-3:] == [
        ("node.started", "wait"), ("node.finished", "wait"), ("run.finished", None)]
    streamed = named(Stream(server, "POST", "/v1/runs/sync", DIAMOND, token=token).all())
    for events in (followed, streamed):
        run_id = events[0].value["runId"]
        assert get_text(server, f"/v1/runs/{run_id}", token) == (200, events[-1].data)
        assert events[-1].value["status"] == "success"
    assert balance(server, token) == {"balance": 994, "reserved": 0, "used": 6}


@pytest.fixture
def make_server(tmp_path):
    """``make_server(workers, **settings)``: a started server, stopped at the end."""
    started = []

    def make(workers: int, env: dict | None = None, **settings: str) -> Server:
        server = Server(tmp_path / str(len(started)), workers=workers,
                        MAX_CONCURRENT_RUNS="0", **settings)
        server.env.update(env or {})
        server.workdir.mkdir()
        server.flask("token", "seed-dev")
        started.append(server.start())
        return server
    yield make
    for server in started:
        server.stop()


def follow_wait(server: Server, run_id: str, token: str = "dev-token") -> Stream:
    """A follower of ``run_id``, read until the run's delay has started."""
    stream = Stream(server, "GET", f"/v1/runs/{run_id}/stream", token=token)
    assert stream.status == 200
    stream.until(lambda e: e.name == "node.started" and e.value["nodeId"] == "wait")
    return stream


def test_a_token_has_at_most_max_followers_and_a_follower_that_leaves_frees_its_slot(
        make_server):
    server = make_server(3, MAX_FOLLOWERS="1")
    other = new_token(server, "other")
    others_run = json.loads(get_plain(server, DIAMOND, token=other)[1])["runId"]
    assert server.request("POST", "/v1/runs", slow(4000, "run_held"))[0] == 202
    first = follow_wait(server, "run_held")
    refused = Stream(server, "GET", "/v1/runs/run_held/stream")
    assert refused.status == 429 and refused.type == "application/json"
    assert refused.response.getheader("Retry-After") == "1"
    assert refused.json()["code"] == 429000
    status, _ = get_text(server, f"/v1/runs/{others_run}/stream", other)  # another token's
    assert status == 200
    first.close()

    def admitted():
        stream = Stream(server, "GET", "/v1/runs/run_held/stream")
        if stream.status == 200:
            return stream
        assert stream.status == 429
        stream.close()
        return None
    asked = time.monotonic()
    again = wait_for(admitted, timeout=5)
    assert time.monotonic() - asked < 2  # the leaver's worker noticed within 0.25 s
    events = named(again.all())
    assert events[-1].name == "run.finished" and events[-1].value["status"] == "success"
    # A follower that reached run.finished has freed its slot too.
    assert get_text(server, "/v1/runs/run_held/stream")[0] == 200


def test_a_follower_that_leaves_frees_its_worker_at_once(make_server):
    """Two workers: one runs a long run, the other follows it; once the follower leaves,
    the next request is served at once, long before the run ends."""
    server = make_server(2)
    assert server.request("POST", "/v1/runs", slow(6000, "run_long"))[0] == 202
    follower = follow_wait(server, "run_long")
    follower.close()
    asked = time.monotonic()
    status, run = server.request("GET", "/v1/runs/run_long")
    assert time.monotonic() - asked < 2.5  # the run lasts 6 s
    assert status == 200 and run["status"] == "running"
    assert final(server, "run_long")["status"] == "success"
