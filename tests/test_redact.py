"""Secrets never leave the process: response, stored run, log file (SPEC §9)."""
from __future__ import annotations

import json

import pytest

from app.redact import REDACTED, Redactor, is_secret_key
from tests.helpers import DEV_AUTH, definition, post_run


@pytest.mark.parametrize("key", ["authorization", "Authorization", "cookie", "Set-Cookie",
                                 "password", "db_password", "secret", "clientSecret", "token",
                                 "access_token", "apiKey", "x-api-key", "API_KEY",
                                 "privateKey", "private-key"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["tokens", "author", "keys", "secretary", "passwordHint",
                                 "message", "apikeyId"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_values_of_secret_keys_and_sensitive_values_are_replaced_everywhere():
    redactor = Redactor(["hunter2", 4242])
    value = {"headers": {"Authorization": "Bearer abc", "Accept": "json"},
             "list": [{"password": {"nested": 1}}, "pw is hunter2!", 4242, 42, True],
             "note": "hunter2hunter2"}
    assert redactor.value(value) == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "list": [{"password": REDACTED}, f"pw is {REDACTED}!", REDACTED, 42, True],
        "note": REDACTED * 2}


def test_node_ids_named_like_secrets_are_not_redacted():
    body = {"executionState": {"token": {"type": "log", "status": "success",
                                         "result": {"token": "x", "ok": 1}}}}
    out = Redactor().run(body)
    assert out["executionState"]["token"]["result"] == {"token": REDACTED, "ok": 1}
    assert out["executionState"]["token"]["status"] == "success"


def test_secrets_reach_handlers_but_not_the_response_store_or_log(client, tmp_path):
    body = {"definition": {**definition("root>say", say={"type": "log", "payload": {
        "message": "pw={{$props.dbPass}} key={{root.result.apiKey}}"}}),
        "props": {"dbPass": "default-pass"}, "sensitivePropKeys": ["dbPass"]},
        "propValues": {"dbPass": "hunter2"},
        "payload": {"apiKey": "s3cr3t-key", "user": "ann"}}
    response = post_run(client, body)
    run = response.json
    state = run["executionState"]
    assert state["root"]["result"]["apiKey"] == REDACTED
    assert state["root"]["result"]["user"] == "ann"
    # the handler saw the real prop value; what leaves is redacted
    assert state["say"]["result"]["message"] == f"pw={REDACTED} key=s3cr3t-key"
    assert state["say"]["input"]["message"] == f"pw={REDACTED} key=s3cr3t-key"
    stored = client.get(f"/v1/runs/{run['runId']}", headers=DEV_AUTH).get_data(as_text=True)
    log = (tmp_path / "log" / "app.log").read_text()
    for leaving in (response.get_data(as_text=True), stored, log):
        assert "hunter2" not in leaving
        assert DEV_AUTH["Authorization"].split()[1] not in leaving
    assert json.loads(stored)["executionState"]["root"]["result"]["apiKey"] == REDACTED
    assert f"pw={REDACTED}" in log


def test_error_codes_are_never_redacted_only_messages():
    redactor = Redactor(["INPUT", "_"])
    body = {"error": {"code": "NODE_FAILED", "message": "INPUT went wrong"},
            "executionState": {"a": {"status": "failure", "error": {
                "code": "INVALID_INPUT", "message": "bad INPUT", "retryable": False}}}}
    out = redactor.run(body)
    assert out["error"] == {"code": "NODE_FAILED", "message": f"{REDACTED} went wrong"}
    assert out["executionState"]["a"]["error"] == {
        "code": "INVALID_INPUT", "message": f"bad {REDACTED}", "retryable": False}

