"""Packaging: one licence, one version, `make help`, an install without warnings, and
JSON answers that end alike on real gunicorn."""
from __future__ import annotations

import configparser
import importlib.metadata
import re
import subprocess
import sys

import pytest

from app import __version__
from tests.helpers import definition, run_engine
from tests.server import ROOT, Server, raw_exchange


def test_the_licence_file_is_the_declared_one():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    installed = importlib.metadata.metadata("workflow-runner")
    assert installed["License"] == "MIT" and "LICENSE" in installed.get_all("License-File")


def test_one_version_everywhere(client, server):
    """The package's, OpenAPI's, /livez's, and the User-Agent of outbound requests."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert importlib.metadata.version("workflow-runner") == __version__
    assert client.get("/openapi.json").json["info"]["version"] == __version__
    assert client.get("/livez").json == {"status": "ok", "version": __version__}
    body = {"definition": definition("root>call", call={"type": "http-request", "payload": {
        "url": server.url("/x")}})}
    assert run_engine(body, settings={"OUTBOUND_ALLOW": ["127.0.0.1"]})["status"] == "success"
    assert server.seen[0].headers["user-agent"] == f"workflow-runner/{__version__}"


def test_make_help_is_the_default_and_lists_every_target():
    listed = subprocess.run(["make", "-s", "--no-print-directory"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    described = {line.split()[1]: line for line in listed.stdout.splitlines()
                 if line.startswith("make ")}
    phony = (ROOT / "Makefile").read_text().split(".PHONY:")[1].split("\n\n")[0]
    targets = set(phony.replace("\\", " ").split()) - {".DEFAULT_GOAL", ":=", "help"}
    assert targets <= set(described), targets - set(described)
    assert all(len(line.split()) > 2 for line in described.values())  # each says something


@pytest.mark.server
def test_an_editable_install_builds_without_warnings(tmp_path):
    """What `make install` (and `make run`) print: nothing from the build backend. Installed
    into a scratch prefix, the environment's own install left alone."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
         "--editable", str(ROOT), "--prefix", str(tmp_path / "prefix")],
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "setuptools" in done.stderr and "from versions" in done.stderr:
        pytest.skip("no package index to build with")
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")]  # pip's own config
    assert said == []


@pytest.mark.server
def test_json_answers_end_alike_on_gunicorn(tmp_path):
    """The app's answers and gunicorn's own refusals (a request line it cannot parse)."""
    server = Server(tmp_path, workers=1)
    server.flask("token", "seed-dev")
    server.start()
    try:
        bodies = [raw_exchange(server.port, request)[2] for request in (
            b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"NOT A REQUEST\r\n\r\n")]
    finally:
        server.stop()
    assert [body[-1:] for body in bodies] == [b"}", b"}", b"}"], bodies
