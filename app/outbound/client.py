"""One outbound request, redirects included, each hop checked like the first.

A hop: parse the URL → resolve and check its host (``addresses``) → connect to
a checked address itself: a urllib3 pool on the IP, the name kept for the Host
header, TLS SNI and the certificate check, so nothing is resolved twice →
read at most ``max_size`` bytes before a deadline shared by all hops.
"""
from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from ..failure import NodeError
from ..redact import is_secret_key
from .addresses import IPAddress, resolve
from .body import read_limited
from .urls import Target, parse_url

REDIRECTS = {301, 302, 303, 307, 308}
MIB = 1024 * 1024
CANCEL_POLL_S = 0.02  # how soon a hop in flight notices that its attempt was cancelled


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lowercase names, repeated values joined by ", "
    body: bytes


@dataclass
class _Limits:
    deadline: float  # time.monotonic()
    timeout_ms: int
    max_size: int
    allow_list: list[str]
    cancelled: threading.Event
    follow: bool
    read_body: bool
    hops: int = 0
    expired: bool = False  # set by ``_guard`` when it cut the connection

    def left(self) -> float:
        """Seconds left; TIMEOUT once none are, or once the attempt was cancelled."""
        left = self.deadline - time.monotonic()
        if left <= 0 or self.cancelled.is_set():
            raise self.timeout()
        return left

    def timeout(self) -> NodeError:
        return NodeError("TIMEOUT", f"The request took longer than {self.timeout_ms} ms.", True)


def request(method: str, url: str, headers: Mapping[str, str], body: bytes | None, *,
            timeout: float, follow_redirects: bool = True, max_hops: int = 5,
            max_size: int = 5 * MIB, allow_list: Iterable[str] = (),
            cancelled: threading.Event | None = None, read_body: bool = True) -> Response:
    """Send a request within ``timeout`` seconds, following up to ``max_hops`` redirects."""
    limits = _Limits(time.monotonic() + timeout, round(timeout * 1000), max_size,
                     list(allow_list), cancelled or threading.Event(), follow_redirects,
                     read_body)
    target = parse_url(url)
    fields = urllib3.HTTPHeaderDict(headers)
    fields.setdefault("Accept-Encoding", "gzip, deflate")  # both decoded within max_size
    while True:
        response = _exchange(method, target, fields, body, limits)
        if not _is_redirect(response.status, response.headers, limits):
            return response
        if limits.hops == max_hops:
            raise NodeError("HTTP_ERROR", f"Stopped after {max_hops} redirects.", False)
        limits.hops += 1
        target, method, body, fields = _redirect(target, method, body, fields, response)


def _is_redirect(status: int, headers: Mapping[str, str], limits: _Limits) -> bool:
    return limits.follow and status in REDIRECTS and bool(headers.get("location"))


def _redirect(target: Target, method: str, body: bytes | None,
              fields: urllib3.HTTPHeaderDict, response: Response):
    """The next hop: 301/302/303 turn into a body-less GET, 307/308 repeat as sent.

    On another origin, no header whose name is secret (SPEC §9: ``Authorization``,
    ``Cookie``, ``Proxy-Authorization``, ``X-Api-Key``, ``X-Auth-Token``, …) is
    sent: they were meant for the first origin. A 307/308 keeps its method and
    body, as HTTP requires, but not those headers.
    """
    following = parse_url(urljoin(target.url, response.headers["location"]), "HTTP_ERROR")
    fields = fields.copy()
    if response.status in (301, 302, 303) and method != "HEAD":
        method, body = "GET", None
        for name in ("content-type", "content-encoding"):
            fields.discard(name)
    if following.origin != target.origin:
        for name in {name.lower() for name in fields if is_secret_key(name)}:
            fields.discard(name)
    return following, method, body, fields


def _exchange(method: str, target: Target, fields: urllib3.HTTPHeaderDict,
              body: bytes | None, limits: _Limits) -> Response:
    """One hop: resolve and check, connect to a checked address, read the answer."""
    limits.left()  # TIMEOUT before a lookup is started for nothing
    addresses = resolve(target.host, target.port, limits.allow_list, limits.deadline,
                        limits.cancelled)
    sent = fields.copy()
    for name in ("host", "content-length", "transfer-encoding"):  # ours, not the caller's
        sent.discard(name)
    sent["Host"] = target.host_header
    if target.auth and "authorization" not in sent:
        sent["Authorization"] = target.auth
    for index, ip in enumerate(addresses):
        sockets: list[socket.socket] = []
        with _pool(target, ip, sockets) as pool, _guard(limits, sockets):
            try:
                left = limits.left()
                raw = pool.urlopen(method, target.path, body=body, headers=sent,
                                   redirect=False, retries=False, assert_same_host=False,
                                   preload_content=False, decode_content=False,
                                   release_conn=False,
                                   timeout=urllib3.Timeout(connect=left, read=left))
            except NewConnectionError as error:
                if index + 1 < len(addresses):
                    continue  # nothing was sent: the next checked address may answer
                raise _failure(error, target, limits) from None
            except (HTTPError, OSError, ValueError) as error:
                raise _failure(error, target, limits) from None
            try:
                return _response(method, raw, limits)
            except (HTTPError, OSError, zlib.error) as error:
                raise _failure(error, target, limits) from None
            finally:
                raw.close()
    raise AssertionError("resolve() returns at least one address")


def _pool(target: Target, ip: IPAddress, sockets: list) -> urllib3.HTTPConnectionPool:
    """A pool for the checked address whose connections report their sockets."""
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            str(ip), target.port, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
            server_hostname=target.host, assert_hostname=target.host)
    else:
        pool = urllib3.HTTPConnectionPool(str(ip), target.port, maxsize=1, retries=False)

    class Reporting(pool.ConnectionCls):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            sockets.append(sock)
            return sock

    pool.ConnectionCls = Reporting
    return pool


@contextmanager
def _guard(limits: _Limits, sockets: list) -> Iterator[None]:
    """Shut the hop's socket at the deadline, or as soon as the attempt is cancelled
    (looked at every ``CANCEL_POLL_S``: a cancelled run, SPEC §12, leaves no thread
    waiting on a slow server).

    Socket timeouts bound each read, not the sum: http.client reads the status
    line and headers (and TLS its handshake) in many reads, so a server
    dripping bytes could otherwise hold this thread long after the attempt.
    """
    done = threading.Event()

    def watch() -> None:
        while not done.wait(min(CANCEL_POLL_S, max(0.0, limits.deadline - time.monotonic()))):
            if limits.cancelled.is_set() or time.monotonic() >= limits.deadline:
                limits.expired = True
                for sock in sockets:
                    with suppress(OSError):  # the plain socket's shutdown, under TLS too
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return

    watcher = threading.Thread(target=watch, name="outbound-guard", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


def _response(method: str, raw: urllib3.HTTPResponse, limits: _Limits) -> Response:
    headers = {name.lower(): raw.headers[name] for name in raw.headers}
    try:
        reason = raw.reason or HTTPStatus(raw.status).phrase
    except ValueError:
        reason = ""
    body = b""
    bodiless = method == "HEAD" or raw.status in (204, 304)  # Content-Length: the GET's
    if limits.read_body and not bodiless and not _is_redirect(raw.status, headers, limits):
        body = read_limited(raw, headers, limits.max_size, limits.left)
        if limits.expired:  # the guard's shutdown looks like the end of the body
            raise limits.timeout()
    return Response(raw.status, reason, headers, body)


def _failure(error: Exception, target: Target, limits: _Limits) -> NodeError:
    """A transport error as a node error; the message names the host, never the IP."""
    timed_out = isinstance(error, (Urllib3Timeout, TimeoutError)) and not isinstance(
        error, NewConnectionError)  # which urllib3 derives from ConnectTimeoutError
    if timed_out or limits.expired:
        return limits.timeout()
    if isinstance(error, NewConnectionError):
        return NodeError("NETWORK_ERROR", f"Could not connect to {target.host}: "
                         f"{_why(error)}.", True)
    if isinstance(error, SSLError):
        return NodeError("NETWORK_ERROR", f"TLS with {target.host} failed: {_why(error)}.",
                         True)
    if isinstance(error, ValueError) and not isinstance(error, HTTPError):
        return NodeError("INVALID_INPUT", f"The request could not be sent: {error}.", False)
    if isinstance(error, zlib.error):
        return NodeError("NETWORK_ERROR", f"The response body could not be decoded: {error}.",
                         True)
    return NodeError("NETWORK_ERROR", f"The connection to {target.host} failed: "
                     f"{_why(error)}.", True)


def _why(error: BaseException) -> str:
    for item in (error.__cause__, *getattr(error, "args", ())):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        if isinstance(item, BaseException) and item is not error:
            return str(item) or type(item).__name__
    return str(error) or type(error).__name__
