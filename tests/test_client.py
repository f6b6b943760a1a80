"""app/client.py against real gunicorn: every call, its errors, streams and their events
in order, hanging up; and the rules of Server-Sent Events against a local server that
writes what the runner never does (comments, data on several lines, CR line ends)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from app.client import ApiError, Client, Event
from tests.helpers import definition
from tests.http_support import Handler, Seen, reply
from tests.server import ROOT, Server

pytestmark = pytest.mark.server

LINE = definition("root>wait", "wait>say",
                  wait={"type": "delay", "payload": {"delayMs": 300}},
                  say={"type": "log", "payload": {"message": "hello {{root.result.name}}"}})
LONG = definition("root>wait", "wait>after",
                  wait={"type": "delay", "payload": {"delayMs": 30000}},
                  after={"type": "log", "payload": {"message": "never"}})
LINE_EVENTS = [("run.started", None), ("node.finished", "root"), ("node.started", "wait"),
               ("node.finished", "wait"), ("node.started", "say"), ("node.finished", "say"),
               ("run.finished", None)]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """gunicorn with 3 workers: a run, a follower and one more request at once."""
    server = Server(tmp_path_factory.mktemp("client"), workers=3)
    server.flask("token", "seed-dev")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(runner) -> Client:
    return Client(runner.base, "dev-token", timeout=30)


def token(runner, name: str, balance: int) -> Client:
    """A client of a new token of its own (its runs and balance are only this test's)."""
    return Client(runner.base, runner.flask("token", "create", name, "--balance", str(balance)),
                  timeout=30)


def names(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(event.name, event.data.get("nodeId")) for event in events]


def until(check, seconds: float = 10):
    """``check()``'s first true answer, asked every 0.1 s for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)
    return found


def stopped(api: Client, run_id: str) -> dict:
    """Cancel a run and wait for its final state."""
    api.cancel(run_id)
    return until(lambda: (run := api.get(run_id))["status"] != "running" and run)


# -- runs ----------------------------------------------------------------------------

def test_run_sync_answers_the_run_and_get_reads_it_back(api):
    answer = api.run_sync(LINE, payload={"name": "Ada"}, runId="run_client_sync")
    assert answer["runId"] == "run_client_sync" and answer["status"] == "success"
    assert answer["executionState"]["say"]["result"]["message"] == "hello Ada"
    assert answer["totalCu"] == 2
    assert api.get("run_client_sync") == answer


def test_a_streamed_run_gives_its_events_in_order_then_its_answer(api):
    with api.stream(LINE, payload={"name": "Ada"}) as events:
        seen = list(events)
    assert names(seen) == LINE_EVENTS
    assert [event.id for event in seen] == [str(n) for n in range(1, len(seen) + 1)]
    run_id = seen[0].data["runId"]
    answer = seen[-1].data
    assert answer == api.get(run_id)  # the answer, as stored
    assert answer["executionState"]["say"]["result"]["message"] == "hello Ada"
    assert seen[3].data["state"] == answer["executionState"]["wait"]
    assert seen[2].data == {"nodeId": "wait", "attempt": 1,
                            "startedAt": answer["executionState"]["wait"]["startedAt"]}


def test_a_streamed_retry_and_a_skipped_node_in_order(api):
    flaky = definition("root>flaky", "flaky>after",
                       flaky={"type": "delay", "timeoutMs": 100, "payload": {"delayMs": 1000},
                              "retry": {"maxAttempts": 2, "initialDelayMs": 10}},
                       after={"type": "log", "payload": {"message": "never"}})
    seen = list(api.stream(flaky))
    steps = [(event.name, event.data.get("nodeId"), event.data.get("attempt"))
             for event in seen]
    assert steps == [("run.started", None, None), ("node.finished", "root", None),
                     ("node.started", "flaky", 1), ("node.retrying", "flaky", 1),
                     ("node.started", "flaky", 2), ("node.finished", "flaky", None),
                     ("node.finished", "after", None), ("run.finished", None, None)]
    assert seen[3].data["error"]["code"] == "TIMEOUT" and seen[3].data["retryInMs"] == 10
    assert seen[5].data["state"]["status"] == "failure"
    assert seen[6].data["state"] == {"type": "log", "status": "skipped", "level": 2,
                                     "reason": "upstream_failed"}
    assert seen[-1].data["status"] == "failure"


def test_a_run_started_without_waiting_is_followed_to_its_answer(api):
    run_id = api.start(LINE, payload={"name": "Bo"})
    assert run_id.startswith("run_")
    with api.follow(run_id) as events:
        seen = list(events)
    assert names(seen) == LINE_EVENTS
    assert seen[0].data == {"runId": run_id}
    assert seen[-1].data == api.get(run_id)
    assert seen[-1].data["executionState"]["say"]["result"]["message"] == "hello Bo"
    # Followed once finished: the same events at once.
    again = list(api.follow(run_id))
    assert names(again) == LINE_EVENTS and again[-1].data == seen[-1].data
    assert [event.id for event in again] == [str(n) for n in range(1, len(again) + 1)]


def test_cancel_stops_a_run_in_flight(api):
    run_id = api.start(LONG, runId="run_client_cancel")
    assert run_id == "run_client_cancel"
    # Its state so far, while it runs.
    running = until(lambda: "wait" in (run := api.get(run_id))["executionState"] and run)
    assert running["status"] == "running"
    assert running["executionState"]["wait"]["status"] == "running"
    answer = api.cancel(run_id)
    final = until(lambda: (run := api.get(run_id))["status"] != "running" and run)
    # 200 with the final state once stopped, else 202 (a slow machine): both say so.
    assert answer in (final, {"runId": run_id, "status": "running", "cancelRequested": True})
    assert final["status"] == "cancelled" and final["error"]["code"] == "CANCELLED"
    assert final["executionState"]["wait"]["error"]["code"] == "CANCELLED"
    assert final["executionState"]["after"]["reason"] == "cancelled"
    with pytest.raises(ApiError) as finished:
        api.cancel(run_id)
    assert (finished.value.status, finished.value.code) == (409, 409000)
    assert finished.value.body["status"] == "cancelled"
    # Followed, it ends with its answer.
    seen = list(api.follow(run_id))
    assert seen[-1] == Event("run.finished", final, str(len(seen)))


def test_a_streamed_run_cancelled_meanwhile_ends_its_stream_with_the_cancelled_answer(api):
    with api.stream(LONG) as events:
        started = next(events)
        assert started.name == "run.started"
        cancelled = api.cancel(started.data["runId"])  # from another worker
        rest = list(events)
    assert names(rest) == [("node.finished", "root"), ("node.started", "wait"),
                           ("node.finished", "wait"), ("node.finished", "after"),
                           ("run.finished", None)]
    answer = rest[-1].data
    assert answer["status"] == "cancelled" and answer == api.get(started.data["runId"])
    assert cancelled in (answer, {"runId": answer["runId"], "status": "running",
                                  "cancelRequested": True})
    assert rest[2].data["state"]["error"]["code"] == "CANCELLED"
    assert rest[3].data["state"]["reason"] == "cancelled"


def test_runs_are_listed_newest_first_page_by_page(runner):
    api = token(runner, "lister", 100)
    fails = definition("root>slow", slow={"type": "delay", "timeoutMs": 10,
                                          "payload": {"delayMs": 1000}})
    api.run_sync(LINE, runId="run_a")
    api.run_sync(fails, runId="run_b")
    api.run_sync(LINE, runId="run_c")
    first = api.list(limit=2)
    assert [run["runId"] for run in first["runs"]] == ["run_c", "run_b"]
    assert set(first["runs"][0]) == {"runId", "status", "createdAt", "durationMs", "totalCu"}
    second = api.list(limit=2, cursor=first["nextCursor"])
    assert [run["runId"] for run in second["runs"]] == ["run_a"]
    assert second["nextCursor"] is None
    assert [run["runId"] for run in api.runs(page_size=1)] == ["run_c", "run_b", "run_a"]
    assert [run["runId"] for run in api.runs(status="failure")] == ["run_b"]
    assert api.list()["runs"] == first["runs"] + second["runs"]


def test_balance_counts_what_runs_used_and_hold(runner):
    api = token(runner, "counted", 100)
    assert api.balance() == {"balance": 100, "reserved": 0, "used": 0}
    used = api.run_sync(LINE)["totalCu"]
    assert api.balance() == {"balance": 100 - used, "reserved": 0, "used": used}
    run_id = api.start(LONG)
    assert api.balance() == {"balance": 100 - used - 2, "reserved": 2, "used": used}
    final = stopped(api, run_id)
    assert api.balance() == {"balance": 100 - used - final["totalCu"], "reserved": 0,
                             "used": used + final["totalCu"]}


def test_validate_and_node_types(api):
    assert api.validate(LINE) == {"valid": True, "nodeCount": 3,
                                  "levels": [["root"], ["wait"], ["say"]], "loops": {},
                                  "warnings": {}}
    types = {node_type["type"] for node_type in api.node_types()}
    assert {"manual", "log", "delay", "for-each"} <= types


# -- errors --------------------------------------------------------------------------

def test_error_answers_raise_with_status_code_message_and_errors(runner, api):
    ghost = definition("root>a", a={"type": "log", "payload": {"message": "x"},
                                    "children": ["ghost"]})
    for call in (api.run_sync, api.start, api.stream, api.validate):
        with pytest.raises(ApiError) as invalid:
            call(ghost)  # a stream's refusal raises before any event is read
        assert (invalid.value.status, invalid.value.code) == (400, 400228)
        assert invalid.value.errors == {"definition.nodes.a.children[0]": ["Unknown node 'ghost'."]}
        assert invalid.value.message and invalid.value.request_id
        assert "400228" in str(invalid.value)
    with pytest.raises(ApiError) as unknown:
        api.get("run_nobody")
    assert (unknown.value.status, unknown.value.code) == (404, 404000)
    for call in (api.follow, api.cancel):
        with pytest.raises(ApiError) as unknown:
            call("run_nobody")
        assert unknown.value.status == 404
    with pytest.raises(ApiError) as query:
        api.list(status="lost", limit=0)
    assert query.value.status == 400 and set(query.value.errors) == {"status", "limit"}
    with pytest.raises(ApiError) as stranger:
        Client(runner.base, "no-such-token").balance()
    assert (stranger.value.status, stranger.value.code) == (401, 401000)
    with pytest.raises(ApiError) as poor:
        token(runner, "poor", 0).run_sync(LINE)
    assert (poor.value.status, poor.value.code) == (402, 402000)
    assert (poor.value.body["balance"], poor.value.body["required"]) == (0, 2)


def test_too_many_runs_in_flight_raise_with_retry_after(runner):
    api = token(runner, "busy", 100)  # may have 2 runs in flight: the workers but one
    first, second = api.start(LONG), api.start(LONG)
    try:
        with pytest.raises(ApiError) as busy:
            api.start(LONG)
        assert (busy.value.status, busy.value.code, busy.value.retry_after) == (429, 429000, 1)
    finally:
        stopped(api, first)
        stopped(api, second)


def test_closing_a_stream_hangs_up_and_frees_its_worker_and_follower_slot(runner):
    """Each token may follow 2 runs at once (RUNNER_MAX_FOLLOWERS); a stream left after
    its first event, four times, frees its slot (and its worker: 2 are free) each time."""
    api = token(runner, "follower", 100)
    run_id = api.start(LONG)
    left = []  # kept: only closing them may hang up
    try:
        for _ in range(4):
            events = until(lambda: _follow_unless_busy(api, run_id))
            left.append(events)
            with events:
                assert next(events) == Event("run.started", {"runId": run_id}, "1")
    finally:
        stopped(api, run_id)


def _follow_unless_busy(api: Client, run_id: str):
    """A follower's stream, or None while the slots of those just left are not yet free."""
    try:
        return api.follow(run_id)
    except ApiError as error:
        if error.status != 429:
            raise
        return None


# -- Server-Sent Events, and answers the runner never gives, from a local server -------

def _serving(server, path: str, status: int, body: bytes, content_type: str,
             *headers: tuple[str, str]) -> None:
    def route(handler: Handler, seen: Seen) -> None:
        reply(handler, status, body, (("Content-Type", content_type), *headers))
    server.routes[path] = route


def test_events_are_read_by_the_rules_of_server_sent_events(server):
    _serving(server, "/v1/runs/run_x/stream", 200, (
        b"\xef\xbb\xbfdata: 1\n\n"                         # a byte order mark is dropped
        b": a comment\n"
        b'id: 7\nevent: node.finished\ndata: {"a":\ndata:  [1]}\n\n'  # lines joined by \n
        b"retry: 500\nunknown: x\ndata\n\n"                # a field without a colon: empty
        b"event: ignored\nid: 8\n\n"                       # no data: not an event; its id holds
        b"id\r\ndata:text, no space\r\n\r\n"               # CRLF; an empty id
        b"event: cr\rdata: x\r\r"                          # lone CRs
        b"data: a\0b\nid: 9\0\n\n"                         # an id holding NUL is ignored
        b"data: cut off before its blank line"), "text/event-stream")
    with Client(server.url(""), "secret").follow("run_x") as events:
        assert list(events) == [
            Event("message", 1, None),
            Event("node.finished", {"a": [1]}, "7"),
            Event("message", "", "7"),
            Event("message", "text, no space", ""),
            Event("cr", "x", ""),
            Event("message", "a\0b", ""),
        ]
    assert server.seen[0].method == "GET" and server.seen[0].path == "/v1/runs/run_x/stream"
    assert server.seen[0].headers["authorization"] == "Bearer secret"
    assert server.seen[0].headers["accept"] == "text/event-stream"


def test_an_error_event_raises_after_the_events_before_it(server):
    _serving(server, "/v1/runs/run_x/stream", 200, (
        b'id: 1\nevent: run.started\ndata: {"runId":"run_x"}\n\n'
        b'id: 2\nevent: error\ndata: {"code":503000,"message":"stopped","runId":"run_x"}\n\n'),
        "text/event-stream")
    events = Client(server.url(""), "secret").follow("run_x")
    assert next(events).name == "run.started"
    with pytest.raises(ApiError) as stopped_run:
        next(events)
    assert (stopped_run.value.status, stopped_run.value.code) == (503, 503000)
    assert stopped_run.value.body["runId"] == "run_x"


def test_an_answer_that_is_not_the_services_json_still_raises_its_status(server):
    _serving(server, "/v1/runs/run_x", 502, b"<html>502 Bad Gateway</html>", "text/html",
             ("Retry-After", "3"))
    with pytest.raises(ApiError) as gateway:
        Client(server.url("/"), "secret").get("run_x")  # (a trailing slash is dropped)
    assert (gateway.value.status, gateway.value.code) == (502, None)
    assert gateway.value.message == "<html>502 Bad Gateway</html>"
    assert gateway.value.retry_after == 3


def test_run_ids_are_quoted_in_paths(server):
    _serving(server, "/v1/runs/a%2Fb%3Fc/cancel", 200, b'{"ok": true}', "application/json")
    assert Client(server.url(""), "secret").cancel("a/b?c") == {"ok": True}
    assert server.seen[0].method == "POST" and server.seen[0].body == b""


def test_the_client_loads_the_standard_library_alone():
    # -S: without site-packages, so a third-party import would fail, not hide.
    code = ("import sys, app.client\n"
            "loaded = {name.partition('.')[0] for name in sys.modules}\n"
            "print(sorted(loaded - set(sys.stdlib_module_names) - {'__main__'}))\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['app']"
