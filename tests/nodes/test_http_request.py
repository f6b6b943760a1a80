"""http-request against a real HTTP server on 127.0.0.1 (allowed only where a test says so)."""
from __future__ import annotations

import gzip
import json
import shutil
import socket
import ssl
import subprocess
import time
from contextlib import ExitStack
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import create_app
from app.jstext import to_text
from app.nodes import http_request
from tests.helpers import DEV_AUTH, definition, post_run, run_engine
from tests.http_support import (
    ALLOW,
    Handler,
    Seen,
    call,
    fails,
    redirect,
    reply,
    serve,
    timed_failure,
)

# -- requests and responses --------------------------------------------------------

def test_get_json(server):
    out = call({"url": server.url("/a?x=1")})
    assert out["status"] == 200 and out["statusText"] == "OK"
    assert out["contentType"] == "application/json"
    assert out["json"] == {"method": "GET", "path": "/a?x=1", "body": ""}
    assert json.loads(out["body"]) == out["json"]
    assert out["headers"]["content-type"] == "application/json"


def test_post_json_body(server):
    call({"url": server.url(), "method": "post", "body": {"a": [1, "é"]}})
    seen = server.seen[0]
    assert seen.method == "POST"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"a": [1, "é"]}


@pytest.mark.parametrize(("body", "given", "sent_type"), [
    ("hello", None, "text/plain; charset=utf-8"),
    ('{"a": 1}', None, "application/json"),
    ("a=1", "application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
])
def test_string_body_content_type(server, body, given, sent_type):
    headers = {"content-TYPE": given} if given else {}
    call({"url": server.url(), "method": "PUT", "body": body, "headers": headers})
    assert server.seen[0].headers["content-type"] == sent_type
    assert server.seen[0].body == body.encode()


def test_query_merged_into_url(server):
    call({"url": server.url("/q?a=1&b=2"),
          "query": {"b": "x y", "c": [1, True, 2.0], "d": None}})
    assert server.seen[0].path == "/q?a=1&b=x%20y&c=1&c=true&c=2"


def test_headers_sent(server):
    call({"url": server.url(), "headers": {"X-Token": "abc", "X-Count": 3, "Host": "evil"}})
    headers = server.seen[0].headers
    assert headers["x-token"] == "abc" and headers["x-count"] == "3"
    assert headers["host"] == f"127.0.0.1:{server.server_port}"
    assert headers["user-agent"].startswith("workflow-runner/")


# SPEC §4's text rule, the one jstext writes (a URL or a header shows a number as a
# log message or a template does): shortest round trip, JavaScript's exponents.
NUMBERS_AS_TEXT = [(2.0, "2"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (1e21, "1e+21"),
                   (1e16, "10000000000000000"), (-0.0, "0"), (0.1, "0.1"), (12, "12"),
                   (2**64, "18446744073709551616"), (True, "true")]


@pytest.mark.parametrize(("number", "written"), NUMBERS_AS_TEXT)
def test_numbers_in_query_and_headers_written_as_in_text(number, written):
    url = http_request.with_query("http://example.com/p", {"v": number, "w": [number]})
    assert url == "http://example.com/p?v={0}&w={0}".format(quote(written, safe=""))
    assert http_request.request_headers({"X-N": number})["X-N"] == written
    assert to_text(number) == written  # as in a log message or a template


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
def test_any_number_in_query_and_headers_is_written_as_jstext_writes_it(number):
    written = to_text(number)
    assert http_request.with_query("http://h/", {"v": number}) == "http://h/?v=" + quote(written)
    assert http_request.request_headers({"X-N": number})["X-N"] == written


def test_numbers_sent_in_query_and_headers(server):
    call({"url": server.url("/q"), "query": {"a": 1e-7, "b": [1e21, 2.0]},
          "headers": {"X-Small": 1e-7, "X-Large": 1e21}})
    seen = server.seen[0]
    assert seen.path == "/q?a=1e-7&b=1e%2B21&b=2"
    assert (seen.headers["x-small"], seen.headers["x-large"]) == ("1e-7", "1e+21")


def test_repeated_response_headers_joined(server):
    server.routes["/multi"] = lambda h, s: reply(
        h, 200, b"plain", (("X-Multi", "a"), ("X-Multi", "b"), ("Content-Type", "text/plain")))
    out = call({"url": server.url("/multi")})
    assert out["headers"]["x-multi"] == "a, b"
    assert out["body"] == "plain" and out["json"] is None


def test_head_has_no_body(server):
    server.routes["/big"] = lambda h, s: reply(h, 200, b"x" * 3000)
    out = call({"url": server.url("/big"), "method": "HEAD", "maxResponseSize": 100})
    assert out["status"] == 200 and out["body"] == "" and out["json"] is None
    assert out["headers"]["content-length"] == "3000"


@pytest.fixture
def server6():
    with ExitStack() as stack:
        try:
            srv = stack.enter_context(serve("::1"))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        yield srv


def test_ipv6_loopback_when_allowed(server6):
    assert fails({"url": server6.url()}).code == "BLOCKED_DESTINATION"  # 127.0.0.1/32 only
    out = call({"url": server6.url("/six")}, settings={"OUTBOUND_ALLOW": ["::1/128"]})
    assert out["json"]["path"] == "/six"
    assert server6.seen[0].headers["host"] == f"[::1]:{server6.server_port}"


def test_charset_decoding(server):
    server.routes["/latin"] = lambda h, s: reply(
        h, 200, "café".encode("latin-1"), (("Content-Type", "text/plain; charset=ISO-8859-1"),))
    server.routes["/bad"] = lambda h, s: reply(h, 200, b"caf\xe9")
    assert call({"url": server.url("/latin")})["body"] == "café"
    assert call({"url": server.url("/bad")})["body"] == "caf\ufffd"


def test_gzip_body_decoded(server):
    packed = gzip.compress(b'{"ok": true}')
    server.routes["/gz"] = lambda h, s: reply(h, 200, packed, (("Content-Encoding", "gzip"),))
    out = call({"url": server.url("/gz")})
    assert out["json"] == {"ok": True}
    assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"


# -- redirects ---------------------------------------------------------------------

def test_redirect_followed(server):
    server.routes["/from"] = redirect("/to")
    out = call({"url": server.url("/from")})
    assert out["status"] == 200 and out["json"]["path"] == "/to"
    assert [s.path for s in server.seen] == ["/from", "/to"]


@pytest.mark.parametrize(("status", "method", "body"), [
    (303, "GET", b""), (302, "GET", b""), (301, "GET", b""),
    (307, "POST", b"data"), (308, "POST", b"data")])
def test_redirect_method_rules(server, status, method, body):
    server.routes["/from"] = redirect("/to", status)
    call({"url": server.url("/from"), "method": "POST", "body": "data"})
    after = server.seen[1]
    assert (after.method, after.body) == (method, body)
    assert ("content-type" in after.headers) == bool(body)


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]:1/",
    "http://0x0a.0.0.1/", "http://[::ffff:169.254.169.254]/", "http://2852039166/"])
def test_redirect_to_internal_address_blocked(server, location):
    server.routes["/from"] = redirect(location)
    error = fails({"url": server.url("/from")})
    assert (error.code, error.retryable) == ("BLOCKED_DESTINATION", False)
    assert len(server.seen) == 1  # nothing went anywhere else (loopback_only checks too)


def test_cross_origin_redirect_drops_credentials(server):
    other = f"http://localhost:{server.server_port}/to"  # same server, another origin
    server.routes["/same"] = redirect("/from")
    server.routes["/from"] = redirect(other)
    settings = {"OUTBOUND_ALLOW": ["127.0.0.1/32", "::1/128"]}
    call({"url": server.url("/same"), "headers": {"Authorization": "Bearer x", "Cookie": "c=1",
                                                  "X-Keep": "1"}}, settings=settings)
    _, same_origin, cross = server.seen
    assert same_origin.headers["authorization"] == "Bearer x"
    assert "authorization" not in cross.headers and "cookie" not in cross.headers
    assert cross.headers["x-keep"] == "1"
    assert cross.headers["host"] == f"localhost:{server.server_port}"


SECRET_HEADERS = {"Authorization": "Bearer x", "Cookie": "c=1", "Proxy-Authorization": "p",
                  "X-Api-Key": "k-123", "X-Auth-Token": "t-456", "Private-Key": "pk-789",
                  "api_key": "ak-000"}


@pytest.mark.parametrize(("status", "method", "body"), [
    (302, "GET", b""), (303, "GET", b""), (307, "POST", b"data"), (308, "POST", b"data")])
def test_cross_origin_redirect_drops_every_secret_header(server, status, method, body):
    other = f"http://localhost:{server.server_port}/to"  # same server, another origin
    server.routes["/same"] = redirect("/from", status)
    server.routes["/from"] = redirect(other, status)
    call({"url": server.url("/same"), "method": "POST", "body": "data",
          "headers": {**SECRET_HEADERS, "X-Keep": "1", "X-Key-Id": "kid"}},
         settings={"OUTBOUND_ALLOW": ["127.0.0.1/32", "::1/128"]})
    _, same_origin, cross = server.seen
    assert {name.lower() for name in SECRET_HEADERS} <= set(same_origin.headers)
    assert not {name.lower() for name in SECRET_HEADERS} & set(cross.headers)
    assert (cross.headers["x-keep"], cross.headers["x-key-id"]) == ("1", "kid")
    assert (cross.method, cross.body) == (method, body)  # 307/308: method and body kept


def test_redirect_limit(server):
    for n in range(1, 7):
        server.routes[f"/hop{n}"] = redirect(f"/hop{n - 1}")
    assert call({"url": server.url("/hop5")})["json"]["path"] == "/hop0"
    server.seen.clear()
    error = fails({"url": server.url("/hop6")})
    assert (error.code, error.retryable) == ("HTTP_ERROR", False)
    assert len(server.seen) == 6


def test_redirect_not_followed_when_disabled(server):
    server.routes["/from"] = redirect("/to")
    out = call({"url": server.url("/from"), "followRedirects": False})
    assert out["status"] == 302 and out["headers"]["location"] == "/to"
    assert len(server.seen) == 1


def test_redirect_to_other_scheme_is_an_error(server):
    server.routes["/from"] = redirect("file:///etc/passwd")
    assert fails({"url": server.url("/from")}).code == "HTTP_ERROR"


# -- limits and failures -------------------------------------------------------------

def _stream(body: bytes, chunked: bool):
    def route(handler: Handler, seen: Seen) -> None:
        if chunked:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 65536):
                part = body[start:start + 65536]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.write(b"0\r\n\r\n")
        else:  # HTTP/1.0 without Content-Length: the body ends when the connection does
            reply(handler, 200, body, length=False)
    return route


@pytest.mark.parametrize("how", ["declared", "close-delimited", "chunked", "gzip-bomb"])
def test_response_too_large(server, how):
    big = b"x" * 3000
    routes = {
        "declared": lambda h, s: reply(h, 200, big),
        "close-delimited": _stream(big, chunked=False),
        "chunked": _stream(big * 100, chunked=True),
        "gzip-bomb": lambda h, s: reply(h, 200, gzip.compress(b"\0" * 20_000_000),
                                        (("Content-Encoding", "gzip"),)),
    }
    server.routes["/big"] = routes[how]
    error = fails({"url": server.url("/big"), "maxResponseSize": 2000})
    assert (error.code, error.retryable) == ("RESPONSE_TOO_LARGE", False)


def test_response_exactly_at_limit(server):
    server.routes["/fit"] = _stream(b"y" * 2000, chunked=True)
    assert len(call({"url": server.url("/fit"), "maxResponseSize": 2000})["body"]) == 2000


def _sleepy(handler: Handler, seen: Seen) -> None:
    handler.server.stop.wait(5)


def test_timeout(server):
    server.routes["/slow"] = _sleepy
    started = time.monotonic()
    error = fails({"url": server.url("/slow")}, seconds=0.3)
    assert (error.code, error.retryable) == ("TIMEOUT", True)
    assert time.monotonic() - started < 3


def test_building_a_huge_query_stops_when_the_attempt_is_cancelled(server):
    error, took = timed_failure({"url": server.url(), "query": {"q": list(range(400_000))}},
                                seconds=30, cancel_after=0.1)
    assert (error.code, error.retryable) == ("TIMEOUT", True)
    assert took < 0.1 + 0.15 and server.seen == []


def test_building_huge_headers_stops_at_the_deadline(server):
    headers = {f"X-H{n}": "v" for n in range(200_000)}
    error, took = timed_failure({"url": server.url(), "headers": headers}, seconds=0.1)
    assert error.code == "TIMEOUT" and took < 0.1 + 0.15 and server.seen == []


def _drip(head: bytes, part: bytes):
    def route(handler: Handler, seen: Seen) -> None:
        handler.wfile.write(head)
        while not handler.server.stop.wait(0.05):
            handler.wfile.write(part)
            handler.wfile.flush()
    return route


@pytest.mark.parametrize("where", ["headers", "body"])
def test_timeout_holds_against_a_dripping_server(server, where):
    head = b"HTTP/1.0 200 OK\r\n" + (b"" if where == "headers" else b"\r\n")
    server.routes["/drip"] = _drip(head, b"X-A: b\r\n" if where == "headers" else b"x")
    started = time.monotonic()
    error = fails({"url": server.url("/drip")}, seconds=0.5)
    assert (error.code, error.retryable) == ("TIMEOUT", True)
    assert time.monotonic() - started < 3


def test_timeout_through_the_engine(server):
    server.routes["/slow"] = _sleepy
    body = {"definition": definition("root>a", a={"type": "http-request", "payload": {
        "url": server.url("/slow"), "timeout": 300}})}
    started = time.monotonic()
    node = run_engine(body, settings=ALLOW)["executionState"]["a"]
    assert node["error"]["code"] == "TIMEOUT"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (503, True), (429, True)])
def test_fail_on_status(server, status, retryable):
    server.routes["/s"] = lambda h, s: reply(h, status, b"nope")
    assert call({"url": server.url("/s")})["status"] == status  # not an error by default
    error = fails({"url": server.url("/s"), "failOnStatus": True})
    assert (error.code, error.retryable) == ("HTTP_ERROR", retryable)
    assert str(status) in error.message


def test_fail_on_status_retried_by_the_engine_when_retryable(server):
    server.routes["/s"] = lambda h, s: reply(h, 503)
    body = {"definition": definition("root>a", a={
        "type": "http-request", "payload": {"url": server.url("/s"), "failOnStatus": True},
        "retry": {"maxAttempts": 2, "initialDelayMs": 1}})}
    node = run_engine(body, settings=ALLOW)["executionState"]["a"]
    assert node["attempts"] == 2 and len(server.seen) == 2


def test_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fails({"url": f"http://127.0.0.1:{port}/"})
    assert (error.code, error.retryable) == ("NETWORK_ERROR", True)


@pytest.mark.parametrize("url", [
    "ftp://example.com/", "http://", "no url", "file:///etc/passwd", "http://[::1/",
    "http://example.com:99999/"])
def test_invalid_url(url):
    error = fails({"url": url})
    assert (error.code, error.retryable) == ("INVALID_INPUT", False)


def test_invalid_url_from_an_expression_fails_the_node_not_the_request():
    body = {"definition": definition("root>a", a={
        "type": "http-request", "payload": {"url": "{{root.result.u}}"}}),
        "payload": {"u": "gopher://x"}}
    node = run_engine(body, settings=ALLOW)["executionState"]["a"]
    assert node["error"]["code"] == "INVALID_INPUT"


# -- text that cannot be encoded: an unpaired surrogate ("\\ud800" in JSON) -----------

LONE = "\ud800"
UNENCODABLE = [  # (payload besides the url, the url's path, what the message names)
    ({}, f"/a{LONE}", "The url"),
    ({}, f"/a?q={LONE}", "The url"),
    ({"query": {"q": ["ok", f"x{LONE}"]}}, "/", "Query parameter 'q'"),
    ({"query": {f"q{LONE}": "x"}}, "/", "Query parameter 'q\\ud800'"),
    ({"headers": {"X-A": f"v{LONE}"}}, "/", "Header 'X-A'"),
    ({"method": "POST", "body": f"b{LONE}"}, "/", "The body"),
    ({"method": "POST", "body": {"a": ["ok", LONE]}}, "/", "body['a'][1]"),
    ({"method": "POST", "body": {f"k{LONE}": 1}}, "/", "A key in body"),
]


@pytest.mark.parametrize(("payload", "path", "field"), UNENCODABLE)
def test_unpaired_surrogate_is_invalid_input_naming_the_field(server, payload, path, field):
    error = fails({**payload, "url": server.url(path)})
    assert (error.code, error.retryable) == ("INVALID_INPUT", False)
    assert field in error.message and "surrogate" in error.message
    error.message.encode("utf-8")  # the message itself can be written anywhere
    assert server.seen == []


def test_header_beyond_latin1_is_invalid_input_before_sending(server):
    error = fails({"url": server.url(), "headers": {"X-Price": "5 €"}})
    assert (error.code, error.retryable) == ("INVALID_INPUT", False)
    assert "Header 'X-Price'" in error.message and "U+20AC" in error.message
    assert server.seen == []
    call({"url": server.url(), "headers": {"X-Name": "café"}})  # Latin-1 is sent as such
    assert server.seen[0].headers["x-name"] == "café"


def test_unpaired_surrogate_through_the_api(client, server):
    body = {"definition": definition("root>a", a={"type": "http-request", "payload": {
        "url": "{{root.result.u}}", "method": "POST", "body": {"text": "{{root.result.t}}"}}}),
        "payload": {"u": server.url("/x"), "t": f"half {LONE} a pair"}}
    response = post_run(client, body)
    assert response.status_code == 200
    node = response.json["executionState"]["a"]
    assert node["error"]["code"] == "INVALID_INPUT" and "body['text']" in node["error"]["message"]
    assert server.seen == []


# -- the default configuration -------------------------------------------------------

def test_default_settings_block_the_local_server(server):
    error = fails({"url": server.url()}, settings={})
    assert (error.code, error.retryable) == ("BLOCKED_DESTINATION", False)
    assert server.seen == []


def test_blocked_is_never_retried(server):
    body = {"definition": definition("root>a", a={
        "type": "http-request", "payload": {"url": server.url()},
        "retry": {"maxAttempts": 3, "initialDelayMs": 1, "retryOn": ["BLOCKED_DESTINATION"]}})}
    out = run_engine(body)
    node = out["executionState"]["a"]
    assert node["error"]["code"] == "BLOCKED_DESTINATION" and node["attempts"] == 1
    assert out["status"] == "failure" and server.seen == []


def test_http_api_blocks_by_default_and_honours_the_allow_list(client, server, tmp_path):
    body = {"definition": definition("root>a", a={
        "type": "http-request", "payload": {"url": server.url("/api")}})}
    blocked = post_run(client, body).json["executionState"]["a"]
    assert blocked["error"]["code"] == "BLOCKED_DESTINATION"
    allowing = create_app({"TESTING": True, "STORE_PATH": str(tmp_path / "allow.sqlite3"),
                           "LOG_FILE": str(tmp_path / "allow.log"),
                           "OUTBOUND_ALLOW": ["127.0.0.1/32"]})
    allowing.extensions["store"].ensure_token("dev", DEV_AUTH["Authorization"].split()[1], 10)
    done = post_run(allowing.test_client(), body).json["executionState"]["a"]
    assert done["status"] == "success" and done["result"]["json"]["path"] == "/api"
    assert [s.path for s in server.seen] == ["/api"]


@pytest.mark.parametrize("payload", [
    {"url": "http://x/", "timeout": 60001}, {"url": "http://x/", "method": "FETCH"},
    {"url": "http://x/", "maxResponseSize": 10 * 1024 * 1024 + 1}, {"method": "GET"},
    {"url": "http://x/", "headers": {"Bad Name": "v"}}])
def test_literal_payload_checked_at_validation(client, payload):
    body = {"definition": definition("root>a", a={"type": "http-request", "payload": payload})}
    response = post_run(client, body)
    assert response.status_code == 400 and response.json["code"] == 400228


# -- TLS: the connection goes to the checked IP, the name is kept for SNI and the cert --

@pytest.fixture
def tls_server(tmp_path, server):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.names = []
    context.sni_callback = lambda sock, name, ctx: server.names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.cert = str(cert)
    return server


def test_https_to_a_pinned_address_keeps_the_name(tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.cert)  # trust the test certificate
    port = tls_server.server_port
    out = call({"url": f"https://localhost:{port}/tls"},
               settings={"OUTBOUND_ALLOW": ["127.0.0.1/32", "::1/128"]})
    assert out["json"]["path"] == "/tls"
    assert tls_server.names == ["localhost"]
    assert tls_server.seen[0].headers["host"] == f"localhost:{port}"


def test_https_certificate_is_verified(tls_server, monkeypatch):
    error = fails({"url": f"https://localhost:{tls_server.server_port}/"},
                  settings={"OUTBOUND_ALLOW": ["127.0.0.1/32", "::1/128"]})
    assert error.code == "NETWORK_ERROR"  # self-signed: not trusted
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.cert)
    error = fails({"url": f"https://127.0.0.1:{tls_server.server_port}/"})
    assert error.code == "NETWORK_ERROR"  # trusted, but issued to another name
    assert tls_server.seen == []


def test_json_that_could_not_be_written_back_stays_text():
    assert http_request.parse_json('{"a": 1e400}') is None  # would come back as Infinity
    assert http_request.parse_json('{"a": NaN}') is None
    assert http_request.parse_json('{"a": [1.5]}') == {"a": [1.5]}
