"""manual: the root; its result is the definition's payload, the request's, triggeredAt."""
from __future__ import annotations

from tests.helpers import definition, run_engine


def test_root_result_merges_payloads_and_adds_triggered_at():
    body = {"definition": definition(), "payload": {"b": 2, "c": 3, "triggeredAt": "mine"}}
    body["definition"]["nodes"]["root"]["payload"] = {"a": 1, "b": 0}
    root = run_engine(body)["executionState"]["root"]
    assert root["status"] == "success" and root["level"] == 0
    result = root["result"]
    assert (result["a"], result["b"], result["c"]) == (1, 2, 3)
    assert result["triggeredAt"] != "mine" and result["triggeredAt"].endswith("Z")
    assert "attempts" not in root and "input" not in root


def test_the_root_alone_is_a_run_that_costs_nothing():
    out = run_engine({"definition": definition()})
    assert out["status"] == "success" and out["totalCu"] == 0
    assert list(out["executionState"]) == ["root"]
