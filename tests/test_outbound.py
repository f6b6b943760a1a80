"""The SSRF guard: address classes, the allow-list, resolution, URLs, bounded decoding.

Nothing here connects anywhere except the local test server on 127.0.0.1;
the spellings below resolve without a DNS query (numeric forms, /etc/hosts),
except in the lookup tests, which ask a name server of their own that never
answers (in a private mount and network namespace).
"""
from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from app import outbound
from app.nodes.base import NodeError
from tests.helpers import run_nodes
from tests.http_support import redirect

INTERNAL = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "127.0.0.1", "127.255.0.9", "0.0.0.0", "0.1.2.3", "169.254.169.254", "169.254.0.1",
    "100.64.0.1", "100.127.255.254", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
    "192.88.99.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::7f00:1", "::808:808",
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "2002:7f00:1::", "2002:a00:1::",
    "2001::1", "2001:0:4136:e378::1", "2001:db8::1", "3fff::1", "100::1", "5f00::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700::1", "2001:4860:4860::8888",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_refused(address):
    assert not outbound.is_public(address)
    assert not outbound.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert outbound.is_public(address)


def test_embedded_ipv4_forms():
    assert str(outbound.embedded_ipv4(ipaddress.ip_address("::ffff:10.0.0.1"))) == "10.0.0.1"
    assert str(outbound.embedded_ipv4(ipaddress.ip_address("64:ff9b::808:808"))) == "8.8.8.8"
    assert str(outbound.embedded_ipv4(ipaddress.ip_address("2002:7f00:1::"))) == "127.0.0.1"
    assert outbound.embedded_ipv4(ipaddress.ip_address("2606:4700::1")) is None
    assert outbound.embedded_ipv4(ipaddress.ip_address("8.8.8.8")) is None


@pytest.mark.parametrize(("host", "address", "allow_list", "expected"), [
    ("Internal.Example", "10.0.0.5", ["internal.example"], True),
    ("internal.example.", "10.0.0.5", ["INTERNAL.example"], True),
    ("other.example", "10.0.0.5", ["internal.example"], False),
    ("x", "10.1.2.3", ["10.0.0.0/8"], True),
    ("x", "10.1.2.3", [" 10.1.2.3 "], True),
    ("x", "11.1.2.3", ["10.0.0.0/8"], False),
    ("x", "::ffff:127.0.0.1", ["127.0.0.1/32"], True),
    ("x", "::1", ["127.0.0.1/32"], False),
    ("x", "fd00::5", ["fd00::/8"], True),
    ("x", "127.0.0.1", [], False),
])
def test_allow_list(host, address, allow_list, expected):
    assert outbound.allowed(host, ipaddress.ip_address(address), allow_list) is expected


@pytest.mark.parametrize("host", [
    "127.1", "0x7f.0.0.1", "2130706433", "017700000001", "::ffff:127.0.0.1", "localhost",
    "0", "127.0.0.1"])
def test_odd_spellings_are_judged_by_their_resolved_address(host):
    with pytest.raises(NodeError) as caught:
        outbound.resolve(host, 80)
    assert (caught.value.code, caught.value.retryable) == ("BLOCKED_DESTINATION", False)


def test_a_refused_destination_names_the_setting_that_allows_it():
    run = run_nodes("root>call", call={"type": "http-request",
                                       "payload": {"url": "http://localhost:9/v1/orders"}})
    error = run["executionState"]["call"]["error"]
    assert error["code"] == "BLOCKED_DESTINATION"
    assert error["message"].endswith(": the setting RUNNER_OUTBOUND_ALLOW lists the hosts "
                                     "and networks that may be reached.")


def test_allow_list_admits_a_resolved_address():
    assert outbound.resolve("127.1", 80, ["127.0.0.1/32"]) == [ipaddress.ip_address("127.0.0.1")]
    assert outbound.resolve("LOCALHOST", 80, ["localhost"])


def _fake_resolver(monkeypatch, *addresses: str) -> None:
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_any_internal_address_blocks_the_name(monkeypatch):
    _fake_resolver(monkeypatch, "93.184.215.14", "10.0.0.1")
    with pytest.raises(NodeError, match="internal"):
        outbound.resolve("mixed.example", 443)


def test_public_name_resolves_to_every_address_in_order(monkeypatch):
    _fake_resolver(monkeypatch, "2606:4700::1", "1.1.1.1", "1.1.1.1")
    assert [str(a) for a in outbound.resolve("public.example", 443)] == ["2606:4700::1",
                                                                         "1.1.1.1"]


def test_resolution_failure_is_a_network_error(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(NodeError) as caught:
        outbound.resolve("nowhere.invalid", 80)
    assert (caught.value.code, caught.value.retryable) == ("NETWORK_ERROR", True)


@pytest.mark.parametrize(("url", "host", "port", "path", "host_header"), [
    ("http://Example.COM", "example.com", 80, "/", "example.com"),
    ("https://example.com:8443/a b?q=1 2#frag", "example.com", 8443, "/a%20b?q=1%202",
     "example.com:8443"),
    ("http://[::1]:8080/x", "::1", 8080, "/x", "[::1]:8080"),
    ("https://bücher.example/", "xn--bcher-kva.example", 443, "/", "xn--bcher-kva.example"),
    ("  http://example.com/%7Efoo  ", "example.com", 80, "/%7Efoo", "example.com"),
])
def test_parse_url(url, host, port, path, host_header):
    target = outbound.parse_url(url)
    assert (target.host, target.port, target.path, target.host_header) == (
        host, port, path, host_header)


def test_parse_url_userinfo_becomes_basic_auth():
    assert outbound.parse_url("http://u%40x:p@h/").auth == "Basic dUB4OnA="


@pytest.mark.parametrize("url", ["", "example.com", "ftp://x/", "http://", "http://:80/",
                                 "javascript:alert(1)", "http://x:port/", "http://[zz]/"])
def test_parse_url_rejects(url):
    with pytest.raises(NodeError) as caught:
        outbound.parse_url(url)
    assert caught.value.code == "INVALID_INPUT"


def test_inflater_never_produces_more_than_asked():
    bomb = gzip.compress(b"\0" * 50_000_000)
    out = outbound.Inflater().feed(bomb, 1000)
    assert len(out) == 1001  # one byte past the room: enough to know it does not fit


def test_inflater_handles_zlib_and_several_gzip_members():
    assert outbound.Inflater().feed(zlib.compress(b"abc"), 100) == b"abc"
    assert outbound.Inflater().feed(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == b"abcd"


def test_request_follows_and_rechecks_each_hop(server):
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect("http://192.168.0.1/")
    with pytest.raises(NodeError) as caught:
        outbound.request("GET", server.url("/a"), {}, None, timeout=5,
                         allow_list=["127.0.0.1/32"])
    assert caught.value.code == "BLOCKED_DESTINATION"
    assert [s.path for s in server.seen] == ["/a", "/b"]


def test_request_cancelled_before_sending(server):
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(NodeError) as caught:
        outbound.request("GET", server.url(), {}, None, timeout=5,
                         allow_list=["127.0.0.1/32"], cancelled=cancelled)
    assert caught.value.code == "TIMEOUT" and server.seen == []


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_request_waiting_for_its_answer_ends_when_cancelled(server, where):
    """A run cancelled mid-request (SPEC §12) must not leave its thread waiting for a slow
    server until the request's own timeout: the connection is shut at once."""
    closed = threading.Event()

    def stall(handler, seen):
        if where == "body":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nx")
            handler.wfile.flush()
        handler.connection.settimeout(10)
        with contextlib.suppress(OSError):
            if handler.connection.recv(1) == b"":  # the client shut its side
                closed.set()

    server.routes["/stall"] = stall
    cancelled = threading.Event()
    threading.Timer(0.2, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        outbound.request("GET", server.url("/stall"), {}, None, timeout=20,
                         allow_list=["127.0.0.1/32"], cancelled=cancelled)
    took = time.monotonic() - started
    assert caught.value.code == "TIMEOUT"
    assert took < 0.2 + 0.8, took  # polled every 20 ms; not the request's 20 s
    assert closed.wait(5)


def test_cancelled_lookup_starts_no_thread():
    cancelled = threading.Event()
    cancelled.set()
    before = threading.active_count()
    with pytest.raises(NodeError) as caught:
        outbound.request("GET", "http://127.0.0.1:9/", {}, None, timeout=5, cancelled=cancelled)
    assert caught.value.code == "TIMEOUT" and threading.active_count() == before


# -- name resolution that never answers ------------------------------------------------

SILENT_DNS_CHILD = textwrap.dedent("""
    import json, socket, threading, time
    from app import outbound
    from app.nodes.base import NodeError

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 53))  # receives every query, answers none

    def attempt(host, limit, cancel_after=None):
        cancelled = threading.Event()
        if cancel_after is not None:
            threading.Timer(cancel_after, cancelled.set).start()
        wall, cpu = time.monotonic(), time.process_time()
        try:
            outbound.request("GET", f"http://{host}/", {}, None, timeout=limit,
                             cancelled=cancelled)
            code = retryable = None
        except NodeError as error:
            code, retryable = error.code, error.retryable
        return {"code": code, "retryable": retryable,
                "ms": (time.monotonic() - wall) * 1000,
                "cpu_ms": (time.process_time() - cpu) * 1000}

    def report(**figures):
        print(json.dumps(figures), flush=True)

    report(deadline=attempt("never.example", 0.5))
    report(cancelled=attempt("never-2.example", 5, cancel_after=0.2))
    from app.outbound import lookup
    for n in range(lookup.MAX_ABANDONED):  # fill the bound (two are out already)
        attempt(f"filler-{n}.example", 0.01)
    report(outstanding=lookup.abandoned(), flood=attempt("one-too-many.example", 5))
""")


def _run_with_silent_name_server(tmp_path: Path) -> dict:
    """Run ``SILENT_DNS_CHILD`` where the system resolver asks only a UDP socket on
    127.0.0.1:53 that never answers: a private network namespace (its own loopback)
    and mount namespace (its own resolv.conf and nsswitch.conf, bind-mounted)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to give the resolver a silent name server")
    resolv, nsswitch = tmp_path / "resolv.conf", tmp_path / "nsswitch.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    nsswitch.write_text("hosts: files dns\n")
    script = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
              f"mount --bind {nsswitch} /etc/nsswitch.conf && exec \"$0\" -c \"$1\"")
    try:  # each figure as soon as it is known: a lookup that hangs shows as a missing one
        done = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", script,
                               sys.executable, SILENT_DNS_CHILD], capture_output=True,
                              text=True, timeout=20, cwd=Path(__file__).resolve().parent.parent)
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = expired.stdout or b"", expired.stderr or b""
        stdout, stderr = (o.decode() if isinstance(o, bytes) else o for o in (stdout, stderr))
    if "unshare failed" in stderr:
        pytest.skip(f"no namespaces here: {stderr.strip()}")
    figures = {"stderr": stderr}
    for line in stdout.splitlines():
        figures.update(json.loads(line))
    return figures


@pytest.fixture(scope="module")
def silent_lookups(tmp_path_factory):
    return _run_with_silent_name_server(tmp_path_factory.mktemp("dns"))


def test_lookup_that_never_answers_ends_at_the_deadline(silent_lookups):
    assert "deadline" in silent_lookups, f"no answer within 20 s: {silent_lookups['stderr']}"
    result = silent_lookups["deadline"]
    assert (result["code"], result["retryable"]) == ("TIMEOUT", True)
    assert 500 <= result["ms"] < 500 + 100
    assert result["cpu_ms"] < 50  # waiting, not spinning


def test_lookup_is_abandoned_when_the_attempt_is_cancelled(silent_lookups):
    assert "cancelled" in silent_lookups, f"no answer within 20 s: {silent_lookups['stderr']}"
    result = silent_lookups["cancelled"]
    assert (result["code"], result["retryable"]) == ("TIMEOUT", True)
    assert 200 <= result["ms"] < 200 + 100 and result["cpu_ms"] < 50


def test_abandoned_lookups_are_bounded(silent_lookups):
    assert "flood" in silent_lookups, f"no answer within 20 s: {silent_lookups['stderr']}"
    assert silent_lookups["outstanding"] == 16
    result = silent_lookups["flood"]
    assert (result["code"], result["retryable"]) == ("NETWORK_ERROR", True)
    assert result["ms"] < 50
