"""Every example in docs/ runs: each ```json request block is sent to the API and the
```json response block after it must match what comes back.

In a response block, "…" matches any value, and an object matches when it has at
least the keys shown (with matching values).

A page's sessions — ```console blocks (``$ `` commands, curl, each followed by what it
prints; run in the checkout, ``runner`` on their PATH) and ```pycon blocks (the Python
client, run as doctests sharing one namespace) — run in page order against a real
gunicorn of their own, where ``http://127.0.0.1:8000`` and the token ``dev-token`` are
what ``make run`` serves. In a console block's output
"…" stands for any text within a line, and a line of "…" alone for one line or more.

Examples that call the sample API — at ``https://shop.example`` (standing for the
reader's own API) or at ``http://127.0.0.1:8089``, where a reader starts
examples/sample_api.py — reach that server started on a free port: the test points
those origins at it and lets those examples, and only those, through the outbound
allow-list.
"""
from __future__ import annotations

import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples import sample_api
from tests.helpers import DEV_AUTH, matches
from tests.server import Server

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```json (request|response)([^\n]*)\n(.*?)^```", re.S | re.M)

# -- the sample API --------------------------------------------------------------

SHOP = "https://shop.example"
SAMPLE = f"http://127.0.0.1:{sample_api.PORT}"  # where a reader starts it


def calls_the_sample_api(text: str) -> bool:
    return SHOP in text or SAMPLE in text


def to_sample_api(text: str, api: sample_api.SampleAPI) -> str:
    return text.replace(SHOP, api.url).replace(SAMPLE, api.url)


@pytest.fixture
def shop():
    """examples/sample_api.py, which readers can start too, on a free port."""
    with sample_api.serve() as api:
        yield api


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


def test_docs_have_examples():
    assert len(examples()) >= 20


@pytest.mark.parametrize("request_args, body, response_args, expected", examples())
def test_example(app, client, request, request_args, body, response_args, expected):
    method, path = request_args or ["POST", "/v1/runs/sync"]
    status = int(response_args[0]) if response_args else 200
    text = json.dumps(body)
    if calls_the_sample_api(text):
        body = json.loads(to_sample_api(text, request.getfixturevalue("shop")))
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
def test_sessions(page, tmp_path, request):
    """A page's sessions in order; one that calls the sample API has it, and a server
    that may reach it (RUNNER_OUTBOUND_ALLOW=127.0.0.1, as the page says)."""
    text, namespace = page.read_text(), {}
    api = request.getfixturevalue("shop") if calls_the_sample_api(text) else None
    server = Server(tmp_path, workers=3, **({"OUTBOUND_ALLOW": "127.0.0.1"} if api else {}))
    server.flask("token", "seed-dev")
    server.start()
    try:
        for block in SESSION.finditer(text):
            kind, body = block.group(1), block.group(2).replace(SERVED, server.base)
            body = to_sample_api(body, api) if api else body
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


# A command runs in the checkout, with this environment's commands first on its PATH
# (`runner`, as in an activated virtual environment).
BIN = str(Path(sys.executable).parent)


def run_command(command: str, expected: str, where: str) -> None:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(["bash", "-c", command], cwd=DOCS.parent, env=env,
                          capture_output=True, text=True, timeout=90)
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
