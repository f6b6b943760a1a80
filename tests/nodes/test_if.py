"""The ``if`` node: a branch from a condition, and the engine following it."""
from __future__ import annotations

import pytest

from app.expressions import resolve_string
from app.nodes import if_
from app.nodes.base import NodeError
from tests.helpers import definition, post_run, run_nodes
from tests.nodes.support_limits import counting_ctx
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error

PRICE_AT_MOST_2000 = {"$and": [{"{{root.result.price}}": {"$lte": 2000}}]}


def branching(price, condition=PRICE_AT_MOST_2000) -> dict:
    """The SPEC §2 example: check → alert (then) / ok (else)."""
    return run_nodes(
        "root>check", "check>alert", "check>ok", payload={"price": price},
        check={"type": "if", "payload": {"condition": condition}},
        alert={"type": "log", "branch": "then", "payload": {"message": "Dropped to "
                                                                       "{{root.result.price}}"}},
        ok={"type": "log", "branch": "else", "payload": {"message": "Fine"}})


def test_branch_then_and_else():
    resolve = {"{{p}}": 1500}.get
    assert call(if_, {"condition": {"{{p}}": {"$lte": 2000}}}, resolve) == {"branch": "then"}
    assert call(if_, {"condition": {"{{p}}": {"$gt": 2000}}}, resolve) == {"branch": "else"}


def test_a_key_without_expression_is_the_literal_text():
    assert call(if_, {"condition": {"hello": {"$eq": "hello"}}}, lambda key: key) == {
        "branch": "then"}


def test_then_runs_and_else_is_skipped():
    out = branching(1500)
    states = out["executionState"]
    assert out["status"] == "success"
    assert states["check"]["result"] == {"branch": "then"}
    assert states["alert"]["result"]["message"] == "Dropped to 1500"
    assert states["ok"]["status"] == "skipped"
    assert states["ok"]["reason"] == "branch_not_taken"
    assert out["totalCu"] == 2  # check and alert; a skipped node costs nothing


def test_else_runs_and_then_is_skipped():
    states = branching(2500)["executionState"]
    assert states["check"]["result"] == {"branch": "else"}
    assert states["ok"]["result"]["message"] == "Fine"
    assert states["alert"]["status"] == "skipped"
    assert states["alert"]["reason"] == "branch_not_taken"


def test_numeric_string_from_the_trigger_compares_as_a_number():
    # "900" > "2000" as text; as numbers it is below the threshold.
    assert branching("900")["executionState"]["check"]["result"] == {"branch": "then"}


def test_missing_left_value_takes_else():
    out = run_nodes("root>check", "check>a", payload={},
                    check={"type": "if", "payload": {"condition": PRICE_AT_MOST_2000}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert out["executionState"]["check"]["result"] == {"branch": "else"}
    assert out["executionState"]["a"]["reason"] == "branch_not_taken"


def test_older_form_with_expression_operand():
    out = branching(150, {"$gt": ["{{root.result.price}}", 100]})
    assert out["executionState"]["check"]["result"] == {"branch": "then"}


def test_right_hand_value_from_an_expression():
    out = run_nodes("root>check", "check>a", payload={"price": 5, "allowed": [1, "5"]},
                    check={"type": "if", "payload": {"condition": {"$and": [
                        {"{{root.result.price}}": {"$in": "{{root.result.allowed}}"}}]}}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert out["executionState"]["check"]["result"] == {"branch": "then"}


def test_condition_object_from_an_expression():
    out = run_nodes("root>check", "check>a", payload={"cond": {"$or": []}},
                    check={"type": "if", "payload": {"condition": "{{root.result.cond}}"}},
                    a={"type": "log", "branch": "else", "payload": {"message": "x"}})
    assert out["executionState"]["check"]["result"] == {"branch": "else"}
    assert out["executionState"]["a"]["status"] == "success"


# -- errors ------------------------------------------------------------------

def test_literal_condition_of_wrong_type_is_400228(client):
    messages = literal_rejected(client, {"type": "if", "payload": {"condition": "a > 1"}},
                                "condition")
    assert messages == ["Not a valid object."]


def test_missing_condition_is_400228(client):
    literal_rejected(client, {"type": "if", "payload": {}}, "condition")


def test_literal_unknown_operator_is_400228(client):
    node = {"type": "if", "payload": {"condition": {"$and": [{"{{root.result.x}}": {"$gt": 1,
                                                                                  "$like": 2}}]}}}
    [message] = literal_rejected(client, node, "condition")
    assert "unknown operator '$like'" in message


def test_condition_key_must_reference_an_ancestor(client):
    body = {"definition": definition(
        "root>check", "root>other", "check>a",
        check={"type": "if", "payload": {"condition": {"{{other.result.x}}": {"$eq": 1}}}},
        other={"type": "log", "payload": {"message": "m"}},
        a={"type": "log", "branch": "then", "payload": {"message": "m"}})}
    response = post_run(client, body)
    assert response.status_code == 400
    assert response.json["code"] == 400228
    [(where, messages)] = response.json["errors"].items()
    assert where.startswith("definition.nodes.check.payload.condition.")
    assert "not an ancestor" in messages[0]


def test_condition_resolving_to_a_non_object_is_invalid_input():
    out = run_nodes("root>check", "check>a", payload={"cond": 5},
                    check={"type": "if", "payload": {"condition": "{{root.result.cond}}"}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert "Not a valid object" in failed_with(out, "check")
    assert out["executionState"]["a"]["reason"] == "upstream_failed"


def test_in_right_side_resolving_to_a_non_array_is_invalid_input():
    out = run_nodes("root>check", "check>a", payload={"allowed": "5"},
                    check={"type": "if", "payload": {"condition": {
                        "x": {"$in": "{{root.result.allowed}}"}}}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert "condition.x.$in: must be an array" in failed_with(out, "check")


def test_malformed_condition_from_an_expression_is_invalid_input():
    out = run_nodes("root>check", "check>a", payload={"cond": {"x": {"$regex": "a"}}},
                    check={"type": "if", "payload": {"condition": "{{root.result.cond}}"}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert "unknown operator '$regex'" in failed_with(out, "check")


def test_text_with_braces_resolved_into_the_condition_is_invalid_input():
    """Resolved, "{{y}}" is text, not an expression: no object of operators."""
    out = run_nodes("root>check", "check>a", payload={"cond": {"x": "{{y}}"}},
                    check={"type": "if", "payload": {"condition": "{{root.result.cond}}"}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert failed_with(out, "check") == \
        'condition.x: expected an object of operators, such as {"$eq": value}.'


def test_a_resolved_condition_key_that_does_not_parse_is_reported_first():
    out = run_nodes("root>check", "check>a",
                    payload={"cond": {"$and": [{"{{a..b}}": {"$eq": 1}}, "{{t}}"]}},
                    check={"type": "if", "payload": {"condition": "{{root.result.cond}}"}},
                    a={"type": "log", "branch": "then", "payload": {"message": "x"}})
    assert failed_with(out, "check").startswith("condition key '{{a..b}}': ")


def test_unparsable_key_from_an_expression_is_invalid_input():
    error = node_error(if_, {"condition": {"{{a..b}}": {"$eq": 1}}},
                       lambda key: resolve_string(key, lambda path: None))
    assert error.code == "INVALID_INPUT"
    assert "{{a..b}}" in error.message


# -- the deadline (SPEC §3): if runs on the scheduling thread ----------------------

@pytest.mark.parametrize("condition", [
    {"{{root.result.a}}": {"$eq": list(range(20_000))}},
    {"{{root.result.a}}": {"$in": [[n] for n in range(20_000)]}},
    {"$or": [{"{{root.result.a}}": {"$eq": n}} for n in range(20_000)]},
])
def test_a_large_condition_stops_at_the_deadline(condition):
    context = counting_ctx(allowed=3)
    context.resolve = lambda key: list(range(20_000))
    with pytest.raises(NodeError) as caught:
        if_.run(if_.Payload().load({"condition": condition}), context)
    assert caught.value.code == "TIMEOUT"
    assert context.checks == 4
