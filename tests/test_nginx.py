"""deploy/nginx.conf in front of real gunicorn, both on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.helpers import definition
from tests.server import ROOT, Server, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # root's PATH has sbin, others' may not
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not os.path.exists(NGINX),
                                 reason="nginx is not installed (.ci/run installs it)")]
TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
    "payload": {"message": "hello"}}
AUTH = {"Authorization": "Bearer dev-token", "Content-Type": "application/json"}


@pytest.fixture
def proxy(tmp_path):
    app = Server(tmp_path, workers=2)
    app.flask("token", "seed-dev")
    app.start()
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app.port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (tmp_path / "runner.conf").write_text(site)
    temp = tmp_path / "nginx"
    temp.mkdir()
    # Started as root, nginx's workers would switch to "nobody", who cannot enter
    # pytest's private temporary directories.
    user = "user root;" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {temp}/nginx.pid;
error_log {temp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {temp}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/runner.conf;
}}
""")
    nginx = subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(temp)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield app, port
    nginx.terminate()
    nginx.wait(10)
    app.stop()


def request(port, method, path, body=None, headers=None, source="127.0.0.1"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                            source_address=(source, 0))
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


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
