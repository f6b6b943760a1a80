"""deploy/nginx.conf in front of real gunicorn, both on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import definition
from tests.nginx import NGINX, Nginx, request, stream
from tests.server import Server, raw_exchange

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not os.path.exists(NGINX),
                                 reason="nginx is not installed (.ci/run installs it)")]
TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
    "payload": {"message": "hello"}}
AUTH = {"Authorization": "Bearer dev-token", "Content-Type": "application/json"}
AUTH_LINE = b"Authorization: Bearer dev-token\r\n"


@pytest.fixture
def proxy(tmp_path):
    app = Server(tmp_path, workers=2)
    app.flask("token", "seed-dev")
    app.start()
    nginx = Nginx(tmp_path, [app.port]).start()
    yield app, nginx.port
    nginx.stop()
    app.stop()


def test_runs_and_errors_pass_through_with_request_ids(proxy):
    _, port = proxy
    status, headers, body = request(port, "POST", "/v1/runs/sync", TWO_NODES,
                                    {**AUTH, "X-Request-ID": "through-nginx"})
    assert status == 200 and headers["X-Request-ID"] == "through-nginx"
    assert json.loads(body)["executionState"]["greet"]["result"]["message"] == "Incoming: hello"
    status, headers, body = request(port, "POST", "/v1/runs/sync", TWO_NODES,
                                    {**AUTH, "X-Request-ID": 'bad "id"'})
    generated = headers["X-Request-ID"]
    assert status == 200 and len(generated) == 32  # nginx's $request_id, used by the app too
    status, _, body = request(port, "POST", "/v1/runs/sync", b"{", AUTH)
    assert status == 400 and json.loads(body)["code"] == 400000
    status, _, body = request(port, "GET", "/v1/runs/nope", None, AUTH)
    assert status == 404 and json.loads(body)["code"] == 404000


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_over_the_limit_get_nginx_json_413(proxy, chunked):
    _, port = proxy
    big = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    headers = {**AUTH, "X-Request-ID": "big-body"}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        big = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    status, headers, body = request(port, "POST", "/v1/runs/sync", big, headers)
    assert status == 413
    assert json.loads(body) == {"code": 413000, "message": "Request body too large",
                                "requestId": "big-body"}


def test_exactly_the_limit_reaches_the_app(proxy):
    _, port = proxy
    body = b"{}" + b" " * (1024 * 1024 - 2)
    status, _, answer = request(port, "POST", "/v1/runs/sync", body, AUTH)
    assert status == 400 and json.loads(answer)["code"] == 400228  # the app's answer


def test_metrics_are_local_only(proxy):
    _, port = proxy
    assert request(port, "GET", "/metrics")[0] == 200
    status, _, body = request(port, "GET", "/metrics", source="127.0.0.2")
    assert status == 403 and json.loads(body)["code"] == 403000


def test_upstream_down_is_json_502(proxy):
    app, port = proxy
    app.stop()
    status, _, body = request(port, "GET", "/livez", None, {"X-Request-ID": "down"})
    assert status == 502
    assert json.loads(body) == {"code": 502000, "message": "Service unavailable",
                                "requestId": "down"}


def test_a_stopping_upstream_is_a_502_at_once_while_its_run_finishes(proxy):
    """On TERM gunicorn stops listening at once (docs/operations.md): nginx meets a
    refused connection and answers 502 at once, not when the run in flight has ended."""
    app, port = proxy
    slow = {"definition": definition("root>wait", wait={"type": "delay",
                                                         "payload": {"delayMs": 3000}})}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(request, port, "POST", "/v1/runs/sync", slow, AUTH)
        wait_until_running(app)
        app.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        started = time.monotonic()
        status, _, body = request(port, "GET", "/livez", None, {"X-Request-ID": "stopping"})
        assert status == 502 and json.loads(body)["requestId"] == "stopping"
        assert time.monotonic() - started < 1 and not pending.done()
        status, _, body = pending.result(timeout=30)
    assert status == 200 and json.loads(body)["status"] == "success"


def wait_until_running(app: Server) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with sqlite3.connect(app.env["RUNNER_STORE_PATH"]) as db:
            if db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("no run started")


UPSTREAM_ENCODING = ("proxy_http_version 1.1;", "proxy_http_version 1.1;\n"
                     '    add_header X-Upstream-Encoding "$upstream_http_content_encoding";')


@pytest.mark.parametrize("variant", ["as-shipped", "passing-Accept-Encoding-on"])
def test_json_is_gzipped_by_nginx_and_not_by_the_app(tmp_path, variant):
    """nginx gzips JSON of 1 KiB or more for a client that asks; the app, asked for no
    encoding, spends no CPU on it (an nginx that passes the client's Accept-Encoding
    on, the test's teeth, gets the app's gzip instead)."""
    app = Server(tmp_path, workers=1)
    app.flask("token", "seed-dev")
    app.start()

    def site(text: str) -> str:
        text = text.replace(*UPSTREAM_ENCODING)  # shows what the app answered nginx
        if variant == "passing-Accept-Encoding-on":
            text = text.replace('proxy_set_header Accept-Encoding "";\n', "")
        return text

    nginx = Nginx(tmp_path, [app.port], site).start()
    try:
        big = {**TWO_NODES, "payload": {"message": "hello", "items": list(range(1000))}}
        gzip_ok = {**AUTH, "Accept-Encoding": "gzip"}
        status, headers, packed = request(nginx.port, "POST", "/v1/runs/sync", big, gzip_ok)
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in headers["Vary"]
        answer = json.loads(zlib.decompress(packed, 16 + zlib.MAX_WBITS))
        assert answer["status"] == "success"
        assert headers.get("X-Upstream-Encoding") == (
            None if variant == "as-shipped" else "gzip")
        status, headers, plain = request(nginx.port, "GET", f"/v1/runs/{answer['runId']}",
                                         None, AUTH)
        assert "Content-Encoding" not in headers and json.loads(plain) == answer
        status, headers, body = request(nginx.port, "GET", "/livez", None, gzip_ok)
        assert "Content-Encoding" not in headers and json.loads(body)["status"] == "ok"
    finally:
        nginx.stop()
        app.stop()


def line_of(length: int) -> bytes:
    """A GET request line of exactly ``length`` bytes (CRLF not counted)."""
    return b"GET /v1/runs/" + b"a" * (length - len(b"GET /v1/runs/ HTTP/1.1")) + b" HTTP/1.1"


def test_the_longest_request_line_nginx_passes_reaches_the_app(proxy):
    _, port = proxy
    request_head = line_of(8190) + b"\r\nHost: x\r\nConnection: close\r\n"
    status, _, body = raw_exchange(port, request_head + AUTH_LINE + b"\r\n")
    assert status == 404 and json.loads(body)["message"].startswith("No run named")  # the app's
    status, headers, body = raw_exchange(port, line_of(8191) + b"\r\nHost: x\r\n\r\n")
    assert status == 414 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"code": 414000, "message": "Request line too long",
                                "requestId": headers["X-Request-ID"]}


def test_a_header_line_nginx_passes_reaches_the_app(proxy):
    """nginx appends to X-Forwarded-For: gunicorn's header limit must leave room."""
    _, port = proxy
    status, _, body = request(port, "GET", "/livez", None,
                              {"X-Forwarded-For": "1" * 8000, "X-Other": "b" * 8000})
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * 9000},  # longer than nginx's header buffer: its own error (494)
    {f"X-Header-{n}": "1" for n in range(150)},  # more than gunicorn's 100: gunicorn's 431
], ids=["long", "many"])
def test_headers_too_large_are_json_431(proxy, headers):
    _, port = proxy
    status, answer, body = request(port, "GET", "/livez", None, headers)
    assert status == 431 and answer["Content-Type"] == "application/json"
    assert json.loads(body) == {"code": 431000, "message": "Request header fields too large",
                                "requestId": answer["X-Request-ID"]}


def test_a_request_nginx_cannot_parse_is_json_400(proxy):
    _, port = proxy
    status, headers, body = raw_exchange(port, b"NOT A REQUEST\r\n\r\n")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 400000


def test_the_apps_own_errors_pass_through_untouched(proxy):
    """error_page in the proxied location lists no 400 or 403: the app's bodies stay."""
    _, port = proxy
    status, _, body = request(port, "POST", "/v1/runs/sync", {"definition": {}}, AUTH)
    assert status == 400 and json.loads(body)["code"] == 400228 and json.loads(body)["errors"]
    status, _, body = request(port, "POST", "/v1//runs/sync", TWO_NODES, AUTH)
    assert status == 404 and json.loads(body)["code"] == 404000  # the app's, not a redirect


def test_a_disabled_tokens_403_is_the_apps(proxy):
    app, port = proxy
    secret = app.flask("token", "create", "off")
    app.flask("token", "disable", "off")
    status, _, body = request(port, "POST", "/v1/runs/sync", TWO_NODES,
                              {**AUTH, "Authorization": f"Bearer {secret}"})
    assert status == 403 and json.loads(body)["message"] == "API token is disabled"


def test_idle_half_sent_connections_do_not_stop_runs(proxy):
    """Sync workers read one client at a time; nginx reads requests whole before passing
    them on, so clients that stop mid-request hold no worker (2 workers here)."""
    _, port = proxy
    idle = []
    try:
        for _ in range(5):
            headers_only = socket.create_connection(("127.0.0.1", port))
            headers_only.sendall(b"POST /v1/runs/sync HTTP/1.1\r\nHost: x\r\n")
            body_half = socket.create_connection(("127.0.0.1", port))
            body_half.sendall(b"POST /v1/runs/sync HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE
                              + b"Content-Type: application/json\r\n"
                              b"Content-Length: 1000\r\n\r\n{\"definition\": ")
            idle += [headers_only, body_half]
        opened = time.monotonic()
        time.sleep(0.5)
        for _ in range(3):
            started = time.monotonic()
            status, _, body = request(port, "POST", "/v1/runs/sync", TWO_NODES, AUTH)
            assert status == 200 and json.loads(body)["status"] == "success"
            assert time.monotonic() - started < 2
        for sock in idle:  # nginx drops them after 10 s of silence (its default: 60 s)
            sock.settimeout(15 - (time.monotonic() - opened))
            sock.recv(4096)  # EOF or a 408; TimeoutError while nginx still holds it
    finally:
        for sock in idle:
            sock.close()


# -- streams (SPEC §12) -----------------------------------------------------------

READ_TIMEOUT_S = 2  # nginx's proxy_read_timeout in the tests below (90 s as shipped)
WAIT_S = 5  # a run's quiet node: longer than that


def quiet(delay_ms: int) -> dict:
    """Three nodes; the second waits ``delay_ms`` without a word (no event meanwhile)."""
    return {"definition": definition(
        "root>first", "first>wait", "wait>last",
        first={"type": "log", "payload": {"message": "first"}},
        wait={"type": "delay", "payload": {"delayMs": delay_ms}},
        last={"type": "log", "payload": {"message": "last"}})}


def streaming_proxy(tmp_path, keep_alive_ms: int, edit=None):
    """gunicorn with a keep-alive of ``keep_alive_ms`` behind deploy/nginx.conf whose
    proxy_read_timeout is READ_TIMEOUT_S; ``edit`` changes the site further. Three
    workers: a token may then have a run and a follower of it in flight (SPEC §8 keeps
    one worker free of any one token)."""
    app = Server(tmp_path, workers=3, STREAM_KEEPALIVE_MS=str(keep_alive_ms))
    app.flask("token", "seed-dev")
    app.start()

    def site(text: str) -> str:
        assert "proxy_read_timeout 90s;" in text
        text = text.replace("proxy_read_timeout 90s;", f"proxy_read_timeout {READ_TIMEOUT_S}s;")
        return edit(text) if edit else text

    return app, Nginx(tmp_path, [app.port], site).start()


def arrival(events, name: str) -> float:
    return next(event.at for event in events if event.name == name)


def check_whole_run(port: int, events) -> dict:
    """A stream that ran to its end: ``run.finished`` last, equal to the stored run."""
    assert events[0].name == "run.started" and events[-1].name == "run.finished"
    finished = json.loads(events[-1].data)
    status, _, stored = request(port, "GET", f"/v1/runs/{finished['runId']}", None, AUTH)
    assert status == 200 and stored.decode() == events[-1].data
    assert finished["status"] == "success" and finished["totalCu"] == 3
    return finished


# The shipped site gzips JSON; these variants gzip event streams too.
GZIP_STREAMS = ("gzip_types application/json", "gzip_types text/event-stream application/json")
IGNORE_THE_HEADER = ("proxy_http_version 1.1;",
                     "proxy_http_version 1.1;\n    proxy_ignore_headers X-Accel-Buffering;")


@pytest.mark.parametrize("variant", ["as-shipped", "as-shipped-asking-gzip", "gzipped",
                                     "keep-alive-past-read-timeout",
                                     "gzipped-ignoring-X-Accel-Buffering"])
def test_a_streamed_sync_run_passes_nginx_event_by_event(tmp_path, variant):
    """Through nginx, with its read timeout lower than the run's quiet wait: the events
    arrive as they happen and the keep-alive comments keep the stream open to
    run.finished; so too when nginx gzips event streams (X-Accel-Buffering: no has it
    flush each chunk). The last two variants are the test's teeth: a keep-alive slower
    than the read timeout has the stream cut, and an nginx that ignores the app's
    X-Accel-Buffering while it gzips holds every event until the run's end."""
    keep_alive_ms = 15_000 if variant == "keep-alive-past-read-timeout" else 500
    edits = {"gzipped": lambda site: site.replace(*GZIP_STREAMS),
             "gzipped-ignoring-X-Accel-Buffering":
                 lambda site: site.replace(*GZIP_STREAMS).replace(*IGNORE_THE_HEADER)}
    app, nginx = streaming_proxy(tmp_path, keep_alive_ms, edits.get(variant))
    gzipped = variant.startswith("gzipped")
    asking = {"Accept-Encoding": "gzip"} if gzipped or variant == "as-shipped-asking-gzip" else {}
    try:
        status, headers, events = stream(nginx.port, "POST", "/v1/runs/sync",
                                         quiet(WAIT_S * 1000), {**AUTH, **asking})
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert headers.get("Content-Encoding") == ("gzip" if gzipped else None)
        names = [event.name for event in events if event.name != ":"]
        if variant == "keep-alive-past-read-timeout":
            assert names[-1] == "node.started" and "run.finished" not in names
            assert "upstream timed out" in (nginx.temp / "error.log").read_text()  # cut
            return
        finished = check_whole_run(nginx.port, events)
        first, last = arrival(events, "run.started"), arrival(events, "run.finished")
        if variant == "gzipped-ignoring-X-Accel-Buffering":
            assert first > WAIT_S - 1  # held by nginx until the run had ended
            return
        assert last - first > WAIT_S - 1  # the first event came long before the run ended
        assert names[:3] == ["run.started", "node.finished", "node.started"]  # root first
        assert names.count("node.finished") == 4 and names.count("node.started") == 3
        assert [json.loads(e.data)["nodeId"] for e in events if e.name == "node.finished"] \
            == list(finished["executionState"])
        keep_alives = [event.at for event in events if event.name == ":"]
        assert len(keep_alives) >= 4 and all(
            first < at < last for at in keep_alives)  # written during the quiet wait
    finally:
        nginx.stop()
        app.stop()


def test_a_follower_stream_passes_nginx_event_by_event(tmp_path):
    app, nginx = streaming_proxy(tmp_path, 500)
    try:
        status, headers, body = request(nginx.port, "POST", "/v1/runs", quiet(WAIT_S * 1000),
                                        AUTH)
        assert status == 202
        run_id = json.loads(body)["runId"]
        status, _, events = stream(nginx.port, "GET", f"/v1/runs/{run_id}/stream", None,
                                   AUTH)
        assert status == 200
        check_whole_run(nginx.port, events)
        first, last = arrival(events, "run.started"), arrival(events, "run.finished")
        assert last - first > WAIT_S - 2  # followed as it ran, not read at its end
        assert sum(event.name == ":" for event in events) >= 3
        assert headers["Location"] == f"/v1/runs/{run_id}"
    finally:
        nginx.stop()
        app.stop()
