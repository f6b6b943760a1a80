"""A real HTTP server on 127.0.0.1 and helpers for the outbound-HTTP tests.

Used by tests/nodes/test_http_request.py, tests/nodes/test_send_webhook.py and
tests/test_outbound.py.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import urllib3.util.connection

from app.nodes import http_request
from app.nodes.base import NodeContext, NodeError

ALLOW = {"OUTBOUND_ALLOW": ["127.0.0.1/32"]}


# -- the local server ------------------------------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes


class Handler(BaseHTTPRequestHandler):
    timeout = 5  # a client that never closes cannot hang the fixture's join

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length))
        self.server.seen.append(seen)
        route = self.server.routes.get(urlsplit(self.path).path, echo)
        route(self, seen)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, *args) -> None:
        pass


class LocalServer(ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined at close: none outlives its test

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), Handler)
        self.seen: list[Seen] = []
        self.routes: dict[str, Callable[[Handler, Seen], None]] = {}
        self.stop = threading.Event()  # wakes handlers that wait (timeout tests)

    def url(self, path: str = "/") -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}{path}"

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up mid-response (too large, timeout) is expected


def reply(handler: Handler, status: int = 200, body: bytes = b"",
          headers: tuple[tuple[str, str], ...] = (), length: bool = True) -> None:
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    if length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def echo(handler: Handler, seen: Seen) -> None:
    out = {"method": seen.method, "path": seen.path, "body": seen.body.decode()}
    reply(handler, 200, json.dumps(out).encode(), (("Content-Type", "application/json"),))


def redirect(location: str, status: int = 302) -> Callable[[Handler, Seen], None]:
    return lambda handler, seen: reply(handler, status, headers=(("Location", location),))


@contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[LocalServer]:
    """A running ``LocalServer``, stopped (every handler thread joined) on exit."""
    srv = LocalServer(host)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join()


def guard_loopback(monkeypatch) -> None:
    """Make any connection to a non-loopback address fail the test."""
    real = urllib3.util.connection.create_connection

    def guarded(address, *args, **kwargs):
        assert ipaddress.ip_address(address[0]).is_loopback, f"connection to {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)


def call(payload: dict, settings: dict | None = None, seconds: float = 10.0,
         module=http_request) -> dict:
    """Run a node handler directly, as the engine would within ``seconds``."""
    data = module.Payload().load(payload)
    ctx = NodeContext("run_test", "node", time.monotonic() + seconds,
                      settings=ALLOW if settings is None else settings)
    return module.run(data, ctx)


def context(seconds: float = 10.0, settings: dict | None = None,
            cancel_after: float | None = None) -> NodeContext:
    """A node context as the engine makes one; its ``cancelled`` is set after
    ``cancel_after`` seconds, as the engine does when a run ends early."""
    ctx = NodeContext("run_test", "node", time.monotonic() + seconds,
                      settings=ALLOW if settings is None else settings)
    if cancel_after is not None:
        timer = threading.Timer(cancel_after, ctx.cancelled.set)
        timer.daemon = True
        timer.start()
    return ctx


def timed_failure(payload: dict, module=http_request,
                  **limits: float) -> tuple[NodeError, float]:
    """The error a handler ends with, and the seconds it ran; ``limits`` are
    ``context``'s, counted from once the payload is loaded."""
    data = module.Payload().load(payload)
    ctx = context(**limits)
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        module.run(data, ctx)
    return caught.value, time.monotonic() - started


def fails(payload: dict, **kwargs) -> NodeError:
    with pytest.raises(NodeError) as caught:
        call(payload, **kwargs)
    return caught.value
