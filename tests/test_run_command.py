"""`runner run-workflow FILE` (and `flask --app wsgi run-workflow`): a workflow file run
in-process, through the API's validation and engine, nothing stored or charged."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEV_AUTH, definition

RUNNER = str(Path(sys.executable).parent / "runner")

GREET = definition("root>greet", "root>check", "check>big", "check>small",
                   greet={"type": "log", "payload": {"message": "Hello {{root.result.name}}"}},
                   check={"type": "if", "payload": {"condition": {"$and": [
                       {"{{root.result.n}}": {"$gt": 3}}]}}},
                   big={"type": "log", "branch": "then", "payload": {"message": "big"}},
                   small={"type": "log", "branch": "else", "payload": {"message": "small"}})
FAILING = definition("root>bad", bad={"type": "convert-to-wei",
                                      "payload": {"value": "{{root.result.amount}}"}})


def write(path: Path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def run(app, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["run-workflow", *args],
                                                          input=stdin)
    return result.exit_code, result.stdout


def test_a_request_body_file_runs_as_the_api_runs_it(app, client, tmp_path):
    body = {"definition": GREET, "payload": {"name": "Ada", "n": 5}, "runId": "run_cli_1"}
    code, out = run(app, write(tmp_path / "greet.json", body))
    assert code == 0
    answer = json.loads(out)
    served = client.post("/v1/runs/sync", json=body, headers=DEV_AUTH).json

    def shape(run: dict) -> dict:
        return {node: (state["status"], state.get("result", {}).get("message"),
                       state.get("reason")) for node, state in run["executionState"].items()}

    assert answer["runId"] == "run_cli_1" and answer["status"] == "success"
    assert shape(answer) == shape(served) and answer["totalCu"] == served["totalCu"] == 3
    assert list(answer) == list(served)


def test_a_bare_definition_runs_with_the_payload_given(app, tmp_path):
    path = write(tmp_path / "greet.json", GREET)
    code, out = run(app, path, "--payload", '{"name": "Bo", "n": 1}')
    answer = json.loads(out)
    assert code == 0 and answer["executionState"]["greet"]["result"]["message"] == "Hello Bo"
    assert answer["executionState"]["big"]["reason"] == "branch_not_taken"
    write(tmp_path / "payload.json", {"name": "Cy", "n": 9})
    code, out = run(app, path, "--payload", f"@{tmp_path / 'payload.json'}")
    assert json.loads(out)["executionState"]["small"]["reason"] == "branch_not_taken"
    code, out = run(app, "-", stdin=json.dumps(GREET))
    assert code == 0 and json.loads(out)["executionState"]["greet"]["status"] == "success"


def test_the_exit_status_follows_the_run(app, tmp_path):
    path = write(tmp_path / "wei.json", {"definition": FAILING, "payload": {"amount": "1.5"}})
    assert run(app, path)[0] == 0
    code, out = run(app, path, "--payload", '{"amount": "lots"}')
    answer = json.loads(out)
    assert code == 1 and answer["status"] == "failure"
    assert answer["error"]["code"] == "NODE_FAILED"
    assert answer["executionState"]["bad"]["error"]["code"] == "INVALID_INPUT"


def test_an_invalid_definition_is_status_2_with_every_problem_at_its_location(app, tmp_path):
    broken = definition("root>a", "a>ghost", a={"type": "log", "payload": {}},
                        b={"type": "nope"})
    path = write(tmp_path / "broken.json", broken)
    code, out = run(app, path)
    assert code == 2
    answer = json.loads(out)
    assert answer["code"] == 400228 and set(answer["errors"]) >= {
        "definition.nodes.a.children[0]", "definition.nodes.a.payload.message",
        "definition.nodes.b.type"}
    code, out = run(app, path, "--table")
    assert code == 2 and out.splitlines()[0] == "invalid: Invalid workflow definition (400228)"
    assert "  definition.nodes.a.children[0]: Unknown node 'ghost'." in out.splitlines()


@pytest.mark.parametrize("text, said", [
    ("{", "is not valid JSON"), ("[1]", "expected a JSON object"),
    ('{"nodes": 1, "x": NaN}', "is not valid JSON")])
def test_a_file_that_is_no_request_is_a_usage_error(app, tmp_path, text, said):
    (tmp_path / "bad.json").write_text(text)
    result = app.test_cli_runner().invoke(
        args=["run-workflow", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and said in result.stderr


def test_the_table_lists_nodes_statuses_and_times(app, tmp_path):
    path = write(tmp_path / "greet.json", {"definition": GREET, "runId": "run_table",
                                           "payload": {"name": "Ada", "n": 5}})
    code, out = run(app, path, "--table")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NODE", "TYPE", "STATUS", "START", "TIME",
                                              "TRIES", "DETAIL"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert list(rows) == ["root", "greet", "check", "big", "small"]
    assert rows["root"][:2] == ["manual", "success"]
    assert re.fullmatch(r"\+\d+ms \d+ms 1 branch then", " ".join(rows["check"][2:]))
    assert rows["small"] == ["log", "skipped", "branch_not_taken"]
    assert re.fullmatch(r"run_table: success in \d+ms, 3 CU", lines[-1])


def test_secrets_are_redacted_as_in_the_api(app, tmp_path):
    body = {"definition": definition("root>say", say={"type": "log", "payload": {
        "message": "key {{root.result.apiKey}}"}}), "payload": {"apiKey": "sk-12345678"}}
    code, out = run(app, write(tmp_path / "secret.json", body))
    assert code == 0 and "sk-12345678" not in out and "[redacted]" in out


def test_nothing_is_stored_or_charged_and_no_store_is_needed(tmp_path):
    """A process of its own, in a directory with no store and an unwritable log."""
    (tmp_path / "a-file").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["RUNNER_LOG_FILE"] = str(tmp_path / "a-file" / "app.log")
    body = {"definition": GREET, "payload": {"name": "Ada", "n": 5}}
    path = write(tmp_path / "greet.json", body)
    done = subprocess.run([RUNNER, "run-workflow", path, "--table"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "success in" in done.stdout.splitlines()[-1]
    # The log node's line goes to stderr (JSON), as it would to the service's log.
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["message"] for line in logged] == ["Hello Ada", "big"]
    assert sorted(os.listdir(tmp_path)) == ["a-file", "greet.json"]
    failed = subprocess.run([RUNNER, "run-workflow", path, "--payload", '{"n": "x"}'],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 0  # "x" > 3 is false: the else branch


def test_flask_has_the_same_command(tmp_path):
    path = write(tmp_path / "greet.json", {"definition": FAILING, "payload": {"amount": "x"}})
    env = {**os.environ, "RUNNER_STORE_PATH": str(tmp_path / "none" / "runner.sqlite3")}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "run-workflow",
                           path], cwd=Path(__file__).parent.parent, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failure"
    assert not (tmp_path / "none").exists()
