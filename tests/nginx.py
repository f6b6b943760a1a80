"""deploy/nginx.conf served by a real nginx on a free 127.0.0.1 port, for tests."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tests.server import ROOT, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # root's PATH has sbin, others' may not
# Each access line: the request, its status and the upstream(s) tried, "a, b" when
# nginx passed it on to a second one.
LOG_FORMAT = "'$request_method $request_uri $status \"$upstream_addr\" $http_x_request_id'"


class Nginx:
    """deploy/nginx.conf with its upstream block listing ``ports``; ``edit`` may change
    the site's text further (a test's variant of the configuration)."""

    def __init__(self, workdir: Path, ports: list[int],
                 edit: Callable[[str], str] | None = None):
        self.workdir, self.port = workdir, free_port()
        servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in ports)
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        site = site.replace("server 127.0.0.1:8000;", servers)
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (workdir / "runner.conf").write_text(edit(site) if edit else site)
        self.temp = workdir / "nginx"
        self.temp.mkdir()
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        temp = self.temp
        # Started as root, nginx's workers would switch to "nobody", who cannot enter
        # pytest's private temporary directories.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.workdir / "nginx.conf").write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {temp}/nginx.pid;
error_log {temp}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format upstreams {LOG_FORMAT};
    access_log {temp}/access.log upstreams;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {self.workdir}/runner.conf;
}}
""")
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.workdir / "nginx.conf"), "-p", str(temp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def access_lines(self, at_least: int = 0) -> list[str]:
        """The access log, one line per request answered, once it holds ``at_least``
        lines (nginx writes a request's line just after the client has its answer)."""
        path = self.temp / "access.log"
        deadline = time.monotonic() + 5
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


def request(port, method, path, body=None, headers=None, source="127.0.0.1"):
    """One request from ``source``; ``(status, headers, body bytes)``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                            source_address=(source, 0))
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class Event(NamedTuple):
    """One event of a stream: ``at`` seconds after the request was sent, its name
    (``":"`` for a comment line) and its data (the comment's text)."""
    at: float
    name: str
    data: str


def stream(port, method, path, body=None, headers=None) -> tuple[int, dict, list[Event]]:
    """A Server-Sent Events request read until the connection ends, each event timed as
    it arrives (a gzip-encoded stream is decoded as it comes): ``(status, headers,
    events)``. A stream cut short ends without its ``run.finished``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        began, events, fields, pending = time.monotonic(), [], {}, b""
        connection.request(method, path, body=data,
                           headers={"Accept": "text/event-stream", **(headers or {})})
        response = connection.getresponse()
        gzipped = response.getheader("Content-Encoding") == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        with contextlib.suppress(http.client.IncompleteRead):
            while chunk := response.read1(65536):
                pending += decoder.decompress(chunk) if gzipped else chunk
                *lines, pending = pending.split(b"\n")
                for line in map(bytes.decode, lines):
                    if line.startswith(":"):
                        events.append(Event(time.monotonic() - began, ":", line[1:].strip()))
                    elif line:
                        name, _, value = line.partition(": ")
                        fields[name] = value
                    elif fields:
                        events.append(Event(time.monotonic() - began, fields.get("event", ""),
                                            fields.get("data", "")))
                        fields = {}
        return response.status, dict(response.getheaders()), events
    finally:
        connection.close()
