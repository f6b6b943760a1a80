"""The request layer's shortcuts (app/factory.py, api.admit) answer as Flask and Werkzeug
would: the URL adapter, the body read from the environ, the answer's headers and body."""
from __future__ import annotations

import io
import json
import threading

import pytest
from flask import Flask
from flask.ctx import RequestContext
from werkzeug.exceptions import BadHost
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.helpers import DEV_AUTH, definition
from tests.server import raw_exchange

TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Hi"}})}
BODY = json.dumps(TWO_NODES).encode()


def adapter_fields(adapter) -> tuple:
    return (adapter.server_name, adapter.script_name, adapter.subdomain, adapter.url_scheme,
            adapter.path_info, adapter.default_method, adapter.query_args)


@pytest.mark.parametrize(("base_url", "host"), [
    ("http://localhost", "localhost"), ("http://localhost", "Example.COM:8000"),
    ("http://localhost", "example.com:80"), ("https://localhost", "example.com:443"),
    ("http://localhost", "bücher.example"), ("http://localhost", "[::1]:8000"),
    ("http://localhost", "bad host"), ("http://localhost/app", "example.com")])
@pytest.mark.parametrize("path", ["/v1/runs/sync?x=1", "/v1/runs/%C3%A9"])
def test_the_url_adapter_is_flasks(app, base_url, host, path):
    for _ in range(2):  # made, then from what is remembered of the host
        environ = EnvironBuilder(path=path, base_url=base_url, method="POST",
                                 environ_overrides={"HTTP_HOST": host}).get_environ()
        ours, flasks = app.request_class(environ), app.request_class(environ)
        assert adapter_fields(app.create_url_adapter(ours)) == adapter_fields(
            Flask.create_url_adapter(app, flasks))
        assert ours.host == flasks.host


def matched(context) -> tuple:
    context.match_request()
    request, error = context.request, context.request.routing_exception
    return (request.url_rule, request.view_args, type(error),
            getattr(error, "valid_methods", None), getattr(error, "new_url", None))


def test_routes_are_werkzeugs(app):
    paths = [rule.rule for rule in app.url_map.iter_rules() if not rule.arguments]
    paths += ["/v1/runs/sync/", "/v1/runs/x", "/nothing", "/b3os/v1/balance", "/"]
    for path in paths:
        for method in ("GET", "POST", "HEAD", "OPTIONS", "DELETE"):
            for _ in range(2):  # matched, then remembered (when it can be)
                environ = EnvironBuilder(path=path, method=method).get_environ()
                assert matched(app.request_context(environ)) == matched(
                    RequestContext(app, environ)), (method, path)
    assert app.extensions["routes"]  # (some were remembered)
    assert all(not rule.arguments for rule in app.extensions["routes"].values())


def test_a_host_idna_refuses_is_refused_every_time(app, client):
    for _ in range(2):
        environ = EnvironBuilder(path="/livez", headers={"Host": "a..b"}).get_environ()
        with pytest.raises(BadHost):
            app.create_url_adapter(app.request_class(environ))
        assert client.get("/livez", headers={"Host": "a..b"}).status_code == 400
    assert client.get("/livez", headers={"Host": "a.b"}).status_code == 200


def test_a_path_is_read_as_utf_8(client):
    response = client.get("/v1/runs/%C3%A9", headers=DEV_AUTH)
    assert response.status_code == 404
    assert response.json["message"] == "No run named 'é'"


def call(app, data: bytes, content_length: int | None, **environ):
    """A POST as a server that does not end the body itself hands it over (Werkzeug's
    development server): what it reads is ``data``, whatever ``content_length`` says."""
    built = EnvironBuilder(path="/v1/runs/sync", method="POST", headers=DEV_AUTH,
                           content_type="application/json").get_environ()
    built.pop("CONTENT_LENGTH", None)
    if content_length is not None:
        built["CONTENT_LENGTH"] = str(content_length)
    built.update({"wsgi.input": io.BytesIO(data), **environ})
    body, status, headers = run_wsgi_app(app, built, buffered=True)
    return int(status.split()[0]), b"".join(body), headers


def test_a_body_is_read_up_to_its_content_length_and_no_further(app):
    status, body, _ = call(app, BODY + b"trailing bytes of the next request", len(BODY))
    assert status == 200 and json.loads(body)["status"] == "success"


def test_a_client_gone_before_its_content_length_is_a_400(app):
    status, body, _ = call(app, BODY, len(BODY) + 10)
    assert status == 400 and json.loads(body)["code"] == 400000


def test_a_body_nothing_ends_is_not_read(app):
    status, body, _ = call(app, BODY, None)
    assert status == 400 and json.loads(body)["code"] == 400000
    status, body, _ = call(app, BODY, None, **{"wsgi.input_terminated": True})
    assert status == 200


def test_flasks_own_body_limit_still_applies(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post("/v1/runs/sync", data=BODY, content_type="application/json",
                           headers=DEV_AUTH)
    assert response.status_code == 413 and response.json["code"] == 413000


@pytest.mark.parametrize("content_type", ["Application/JSON", "application/json;charset=utf-8",
                                          "application/problem+json"])
def test_json_content_types(client, content_type):
    response = client.post("/v1/runs/sync", data=BODY, content_type=content_type,
                           headers=DEV_AUTH)
    assert response.status_code == 200


def test_a_runs_answer_has_these_headers_in_this_order(app):
    big = json.dumps({"definition": definition("root>greet", greet={
        "type": "log", "payload": {"message": "Hi " * 1000}})}).encode()
    status, body, headers = call(app, big, len(big))
    assert status == 200
    assert [name for name, _ in headers] == [
        "Content-Type", "Content-Length", "X-Request-ID", "Vary"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Vary"] == "Accept-Encoding"


def test_a_head_request_has_the_get_answers_headers_and_no_body(app):
    environ = EnvironBuilder(path="/v1/balance", method="HEAD", headers=DEV_AUTH).get_environ()
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("200") and b"".join(body) == b""
    got = app.test_client().get("/v1/balance", headers=DEV_AUTH)
    assert headers["Content-Length"] == str(len(got.data)) != "0"


def test_a_given_request_id_is_echoed_once(app):
    status, _, headers = call(app, BODY, len(BODY), HTTP_X_REQUEST_ID="abc-1")
    assert status == 200 and headers.getlist("X-Request-ID") == ["abc-1"]


def exchange(port: int, headers: str, body: bytes) -> tuple[int, bytes]:
    status, _, answer = raw_exchange(port, (
        f"POST /v1/runs/sync HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: {DEV_AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\n{headers}\r\n").encode() + body)
    return status, answer


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))\
        + b"0\r\n\r\n"


def test_werkzeugs_development_server_reads_bodies_of_either_kind(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for headers, body in ((f"Content-Length: {len(BODY)}\r\n", BODY),
                              ("Transfer-Encoding: chunked\r\n", chunked(BODY))):
            status, answer = exchange(server.port, headers, body)
            assert status == 200 and json.loads(answer)["status"] == "success", answer
    finally:
        server.shutdown()
        thread.join()


def test_an_app_contexts_url_adapter_is_flasks(app):
    assert app.create_url_adapter(None) is None is Flask.create_url_adapter(app, None)
    app.config["SERVER_NAME"] = "example.com"
    assert adapter_fields(app.create_url_adapter(None)) == adapter_fields(
        Flask.create_url_adapter(app, None))


def test_a_requests_blueprints_are_flasks(app):
    for path in ["/v1/runs/sync", "/b3os/v1/runs/sync", "/v1/runs/x", "/healthz", "/nothing"]:
        environ = EnvironBuilder(path=path, method="POST").get_environ()
        ours, flasks = app.request_context(environ), RequestContext(app, environ)
        ours.match_request()
        flasks.match_request()
        for _ in range(2):  # worked out, then kept
            assert ours.request.blueprint == Flask.request_class.blueprint.fget(flasks.request)
            assert ours.request.blueprints == Flask.request_class.blueprints.fget(
                flasks.request)


def test_sessions_are_flasks(app):
    """Without a secret key the null session, opened at once; with one, Flask's."""
    interface = app.session_interface
    request = app.request_class(EnvironBuilder(path="/").get_environ())
    session = interface.open_session(app, request)
    assert interface.is_null_session(session)
    assert type(super(type(interface), interface).open_session(app, request)) is type(None)
    app.secret_key = "a secret"
    assert not interface.is_null_session(interface.open_session(app, request))


def test_g_is_flasks(app):
    with app.app_context():
        from flask import g
        g.one = 1
        assert g.one == 1 and g.get("one") == 1 and "one" in g and list(g) == ["one"]
        assert g.pop("one") == 1 and g.get("one") is None and not hasattr(g, "one")
