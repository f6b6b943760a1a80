"""Every example in docs/ runs: each ```json request block is sent to the API and the
```json response block after it must match what comes back.

In a response block, "…" matches any value, and an object matches when it has at
least the keys shown (with matching values).

A page's sessions — ```console blocks (``$ `` commands, curl, each followed by what it
prints) and ```pycon blocks (the Python client, run as doctests sharing one namespace)
— run in page order against a real gunicorn of their own, where ``http://127.0.0.1:8000``
and the token ``dev-token`` are what ``make run`` serves. In a console block's output
"…" stands for any text within a line, and a line of "…" alone for one line or more.

Examples that call the sample API at ``https://shop.example`` reach a real HTTP
server on 127.0.0.1 instead (``SHOP``'s routes): the test points that origin at the
server and lets those examples, and only those, through the outbound allow-list.
"""
from __future__ import annotations

import doctest
import io
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import DEV_AUTH
from tests.http_support import Handler, Seen, reply, serve
from tests.server import Server

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```json (request|response)([^\n]*)\n(.*?)^```", re.S | re.M)
ANY = "…"

# -- the sample API --------------------------------------------------------------

SHOP = "https://shop.example"
ORDERS = [{"id": "A-1", "sku": "tea", "qty": 2},
          {"id": "A-2", "sku": "jam", "qty": 4},
          {"id": "A-3", "sku": "tea", "qty": 1}]
STOCK = {"tea": 5, "jam": 1}


def _json(handler: Handler, value, status: int = 200) -> None:
    reply(handler, status, json.dumps(value).encode(), (("Content-Type", "application/json"),))


def _orders(handler: Handler, seen: Seen) -> None:
    _json(handler, {"orders": ORDERS})


def _stock(handler: Handler, seen: Seen) -> None:
    sku = parse_qs(urlsplit(seen.path).query).get("sku", [""])[0]
    if sku not in STOCK:
        _json(handler, {"error": f"unknown sku {sku!r}"}, 404)
        return
    _json(handler, {"sku": sku, "available": STOCK[sku]})


@pytest.fixture
def shop():
    with serve() as srv:
        srv.routes.update({"/orders": _orders, "/stock": _stock})
        yield srv


# -- the examples ----------------------------------------------------------------

def examples() -> list:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        blocks = BLOCK.findall(page.read_text())
        for i, (kind, args, text) in enumerate(blocks):
            if kind != "request":
                continue
            assert i + 1 < len(blocks) and blocks[i + 1][0] == "response", \
                f"{page.name}: a request block without a response block after it"
            found.append(pytest.param(args.split(), json.loads(text), blocks[i + 1][1].split(),
                                      json.loads(blocks[i + 1][2]),
                                      id=f"{page.stem}-{len(found) + 1}"))
    return found


def matches(expected, actual) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual


def test_docs_have_examples():
    assert len(examples()) >= 20


@pytest.mark.parametrize("request_args, body, response_args, expected", examples())
def test_example(app, client, request, request_args, body, response_args, expected):
    method, path = request_args or ["POST", "/v1/runs/sync"]
    status = int(response_args[0]) if response_args else 200
    text = json.dumps(body)
    if SHOP in text:
        server = request.getfixturevalue("shop")
        body = json.loads(text.replace(SHOP, server.url("")))
        app.config["OUTBOUND_ALLOW"] = ["127.0.0.1/32"]
    response = client.open(path, method=method, json=body, headers=DEV_AUTH)
    assert response.status_code == status, response.get_data(as_text=True)
    assert matches(expected, response.json), json.dumps(response.json, indent=1)


# -- sessions against a real server ----------------------------------------------

SESSION = re.compile(r"^```(console|pycon)\n(.*?)^```", re.S | re.M)
SERVED = "http://127.0.0.1:8000"  # where `make run` serves, as the pages say


def session_pages() -> list:
    return [pytest.param(page, id=page.stem) for page in sorted(DOCS.glob("*.md"))
            if SESSION.search(page.read_text())]


def test_run_control_has_sessions():
    assert "run-control" in {param.id for param in session_pages()}


@pytest.mark.server
@pytest.mark.parametrize("page", session_pages())
def test_sessions(page, tmp_path):
    server = Server(tmp_path, workers=3)
    server.flask("token", "seed-dev")
    server.start()
    try:
        text, namespace = page.read_text(), {}
        for block in SESSION.finditer(text):
            kind, body = block.group(1), block.group(2).replace(SERVED, server.base)
            line = text.count("\n", 0, block.start()) + 2  # the block's first
            if kind == "console":
                for command, expected in commands(body):
                    run_command(command, expected, f"{page.name}:{line}")
            else:
                run_doctest(body, namespace, page.name, line)
    finally:
        server.stop()


def commands(block: str) -> Iterator[tuple[str, str]]:
    """A console block's ``(command, expected output)`` pairs: a command starts at ``$ ``
    and goes on while a quote is open or its line ends in a backslash."""
    lines = block.splitlines()
    at = 0
    while at < len(lines):
        assert lines[at].startswith("$ "), f"not a command: {lines[at]!r}"
        command = lines[at][2:]
        at += 1
        while not _complete(command):
            command += "\n" + lines[at]
            at += 1
        output = []
        while at < len(lines) and not lines[at].startswith("$ "):
            output.append(lines[at])
            at += 1
        yield command, "\n".join(output)


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # a quote still open
        return False
    return True


def run_command(command: str, expected: str, where: str) -> None:
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"{where}: {command}\n{done.stderr}"
    assert output_matches(expected, done.stdout), \
        f"{where}: {command}\n--- expected\n{expected}\n--- printed\n{done.stdout}"


def output_matches(expected: str, printed: str) -> bool:
    """"…" matches any text within a line; a line of "…" alone, one line or more."""
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    pattern = "\n".join(r"[\s\S]*?" if line == "…" else
                        re.escape(line).replace("…", r"[^\n]*?") for line in lines(expected))
    return re.fullmatch(pattern, "\n".join(lines(printed))) is not None


def run_doctest(block: str, namespace: dict, page: str, line: int) -> None:
    """A pycon block (from ``line`` of ``page``) as a doctest; what it defines stays for
    the page's next blocks."""
    test = doctest.DocTestParser().get_doctest(block, namespace, page, page, line - 1)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    namespace.update(test.globs)
    assert runner.failures == 0, report.getvalue()


@pytest.mark.parametrize(("expected", "printed", "matched"), [
    ('{"runId":"run_…","status":"running"}', '{"runId":"run_01ab","status":"running"}', True),
    ('{"runId":"run_…","status":"running"}', '{"runId":"run_01ab","status":"success"}', False),
    ("id: 1\n…\nid: 3", "id: 1\nevent: a\n\nid: 2\nid: 3\n", True),
    ("id: 1\nid: 3", "id: 1\nid: 2\nid: 3", False),
    ("a…", "ab\nc", False),  # within a line only
])
def test_console_output_matching(expected, printed, matched):
    assert output_matches(expected, printed) is matched
