"""Every workflow of examples/ runs as its sidecar says: through `runner run-workflow`
(a process of its own, as a reader would run it) and through the API.

``examples/<name>.json`` is a request body or a bare definition;
``examples/<name>.outcome.json`` holds ``exit`` (run-workflow's exit status),
``expect`` (the answer: "…" matches any value, an object matches on the keys shown),
optionally ``payload`` (given as --payload) and ``hooks`` (what the sample API's
webhook receiver got). Examples call examples/sample_api.py, started here on a free
port in place of its default ``http://127.0.0.1:8089``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples import sample_api
from tests.helpers import DEV_AUTH, matches
from tests.server import ROOT

EXAMPLES = ROOT / "examples"
SAMPLE = f"http://127.0.0.1:{sample_api.PORT}"
RUNNER = str(Path(sys.executable).parent / "runner")


def names() -> list[str]:
    return sorted(path.name.removesuffix(".json") for path in EXAMPLES.glob("*.json")
                  if not path.name.endswith(".outcome.json"))


def test_every_example_has_its_outcome_and_some_are_b3os_definitions():
    outcomes = {path.name.removesuffix(".outcome.json")
                for path in EXAMPLES.glob("*.outcome.json")}
    assert outcomes == set(names()) and len(outcomes) >= 5
    bare = [name for name in names() if "nodes" in json.loads((EXAMPLES / f"{name}.json")
                                                              .read_text())]
    assert len([name for name in bare if name.startswith("b3os-")]) >= 3


def outcome(name: str, api: sample_api.SampleAPI) -> dict:
    """The sidecar, the sample API where it runs here."""
    text = (EXAMPLES / f"{name}.outcome.json").read_text()
    return json.loads(text.replace(SAMPLE, api.url))


def payload_for(name: str, api: sample_api.SampleAPI) -> dict | None:
    """The sidecar's payload, else the file's own; the sample API where it runs here."""
    given = outcome(name, api).get("payload")
    if given is None:
        given = json.loads((EXAMPLES / f"{name}.json").read_text()).get("payload")
    return None if given is None else json.loads(json.dumps(given).replace(SAMPLE, api.url))


@pytest.fixture
def api():
    with sample_api.serve() as server:
        yield server


@pytest.mark.parametrize("name", names())
def test_example_with_run_workflow(name, api, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(RUNNER_OUTBOUND_ALLOW="127.0.0.1", RUNNER_LOG_FILE="")
    command = [RUNNER, "run-workflow", str(EXAMPLES / f"{name}.json")]
    payload = payload_for(name, api)
    if payload is not None:
        command += ["--payload", json.dumps(payload)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    expected = outcome(name, api)
    assert done.returncode == expected["exit"], done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert matches(expected["expect"], answer), json.dumps(answer, indent=1)
    assert api.hooks == expected.get("hooks", [])


@pytest.mark.parametrize("name", names())
def test_example_through_the_api(name, api, app, client):
    app.config["OUTBOUND_ALLOW"] = ["127.0.0.1"]
    body = json.loads((EXAMPLES / f"{name}.json").read_text())
    if "nodes" in body:
        body = {"definition": body}
    payload = payload_for(name, api)
    if payload is not None:
        body["payload"] = payload
    response = client.post("/v1/runs/sync", json=body, headers=DEV_AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = outcome(name, api)
    assert matches(expected["expect"], response.json), json.dumps(response.json, indent=1)
    assert (response.json["status"] == "success") == (expected["exit"] == 0)
