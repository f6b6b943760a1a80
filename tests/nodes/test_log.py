"""log: the message comes back and goes to the service log with run and node ids."""
from __future__ import annotations

import logging

import pytest

from app.nodes import log
from app.nodes.base import NodeError
from tests.helpers import definition, post_run, run_nodes
from tests.nodes.support_limits import counting_ctx


def test_message_is_returned_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="app.nodes.log"):
        out = run_nodes("root>say", say={"type": "log", "payload": {
            "message": "héllo {{root.result.who}} ✓"}}, payload={"who": "Ann"})
    result = out["executionState"]["say"]["result"]
    assert result["message"] == "héllo Ann ✓" and result["loggedAt"].endswith("Z")
    (record,) = [r for r in caplog.records if r.name == "app.nodes.log"]
    assert record.getMessage() == "héllo Ann ✓"
    assert (record.runId, record.nodeId) == ("run_test", "say")


def test_non_string_messages_are_written_as_text():
    out = run_nodes("root>a", "root>b", "root>c", payload={"n": 2.0, "xs": [1, "a"]},
                    a={"type": "log", "payload": {"message": "{{root.result.n}}"}},
                    b={"type": "log", "payload": {"message": "{{root.result.xs}}"}},
                    c={"type": "log", "payload": {"message": "{{root.result.missing}}"}})
    messages = [out["executionState"][n]["result"]["message"] for n in "abc"]
    assert messages == ["2", '[1,"a"]', ""]


def test_message_is_required(client):
    response = post_run(client, {"definition": definition("root>a", a={"type": "log"})})
    assert response.status_code == 400
    assert response.json["errors"] == {
        "definition.nodes.a.payload.message": ["Missing data for required field."]}


def test_a_large_message_is_written_within_the_deadline():
    context = counting_ctx(allowed=1)
    with pytest.raises(NodeError) as caught:
        log.run({"message": {"v": [1e-7] * 20_000}}, context)
    assert caught.value.code == "TIMEOUT"
