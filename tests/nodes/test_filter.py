"""The ``filter`` node: the condition DSL over array items."""
from __future__ import annotations

from app.nodes import conditions, filter_
from tests.helpers import run_nodes
from tests.nodes.support_limits import assert_no_cpu_after, counted_items, times_out
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error, schema_errors

TOKENS = [
    {"token": {"symbol": "ETH"}, "amount": "1000000000000000000000", "name": "Ether"},
    {"token": {"symbol": "USDC"}, "amount": 5, "name": "Éclair"},
    {"token": {"symbol": "DAI"}, "name": "Dai"},
    "not an object",
]


def kept(condition, array=TOKENS, resolve=None, key="filter") -> list:
    return call(filter_, {"array": array, key: condition}, resolve)["filtered"]


def test_bare_path_and_item_hole_keys():
    big = {"$and": [{"amount": {"$gte": 1e21}}]}
    assert kept(big) == [TOKENS[0]]
    assert kept({"$and": [{"{{@amount}}": {"$gte": 1e21}}]}) == [TOKENS[0]]
    assert kept({"$and": [{"@amount": {"$lt": 1e21}}]}) == [TOKENS[1]]


def test_nested_path_and_or():
    condition = {"$or": [{"token.symbol": {"$eq": "DAI"}}, {"{{ @token.symbol }}": {"$eq": "ETH"}}]}
    assert kept(condition) == [TOKENS[0], TOKENS[2]]


def test_index_path():
    rows = [{"tags": ["a", "b"]}, {"tags": ["b"]}, {"tags": []}]
    assert kept({"tags.1": {"$eq": "b"}}, rows) == [rows[0]]
    assert kept({"tags[0]": {"$eq": "b"}}, rows) == [rows[1]]


def test_the_item_itself():
    numbers = [3, "12", 7, None, "x", True]
    assert kept({"{{@}}": {"$gt": 5}}, numbers) == ["12", 7]
    assert kept({"@": {"$exists": False}}, numbers) == [None]


def test_missing_fields_and_non_objects():
    assert kept({"amount": {"$exists": False}}) == [TOKENS[2], TOKENS[3]]
    assert kept({"amount": {"$ne": 5}}) == [TOKENS[0], TOKENS[2], TOKENS[3]]


def test_unicode():
    assert kept({"name": {"$startsWith": "É"}}) == [TOKENS[1]]
    assert kept({"name": {"$contains": "clair"}}) == [TOKENS[1]]


def test_empty_array_and_empty_and():
    assert kept({"amount": {"$gt": 0}}, []) == []
    assert kept({"$and": []}) == TOKENS
    assert kept({"$or": []}) == []


def test_condition_alias():
    assert kept({"token.symbol": {"$in": ["USDC", "DAI"]}}, key="condition") == TOKENS[1:3]


def test_run_expression_key_is_the_same_for_every_item():
    asked = []

    def resolve(key):
        asked.append(key)
        return True

    assert kept({"{{root.result.on}}": {"$eq": True}}, resolve=resolve) == TOKENS
    assert asked == ["{{root.result.on}}"]  # resolved once, not per item


def test_older_form_reads_item_holes_and_keeps_literals():
    assert kept({"$gt": ["{{@amount}}", 100]}) == [TOKENS[0]]
    assert kept({"$eq": ["amount", "amount"]}) == TOKENS  # a plain string is itself


def test_order_is_preserved_and_items_are_unchanged():
    rows = [{"n": i} for i in (5, 1, 4, 2)]
    assert kept({"n": {"$gte": 2}}, rows) == [{"n": 5}, {"n": 4}, {"n": 2}]


def test_in_a_workflow_with_a_threshold_from_the_trigger():
    # "asset", not "token": values under a secret key are redacted in the answer (SPEC §9).
    txs = [{"asset" if k == "token" else k: v for k, v in tx.items()} for tx in TOKENS[:3]]
    out = run_nodes("root>big", payload={"txs": txs, "min": "10"},
                    big={"type": "filter", "payload": {
                        "array": "{{root.result.txs}}",
                        "filter": {"$and": [{"{{@amount}}": {"$gte": "{{root.result.min}}"}},
                                            {"asset.symbol": {"$ne": "USDC"}}]}}})
    assert out["status"] == "success"
    assert out["executionState"]["big"]["result"] == {"filtered": [txs[0]]}
    # {{@…}} is the node's own: the recorded input keeps it as written.
    assert "{{@amount}}" in out["executionState"]["big"]["input"]["filter"]["$and"][0]


# -- errors ------------------------------------------------------------------

def test_filter_or_condition_is_required():
    errors = schema_errors(filter_, {"array": []})
    assert "filter" in errors


def test_filter_and_condition_together_are_refused():
    errors = schema_errors(filter_, {"array": [], "filter": {"$and": []},
                                     "condition": {"$and": []}})
    assert errors == {"condition": ["Give 'filter' or its alias 'condition', not both."]}


def test_ill_typed_filter_is_reported_on_its_own_field():
    assert schema_errors(filter_, {"array": [], "filter": 5}) == {
        "filter": ["Not a valid object."]}


def test_literal_array_of_wrong_type_is_400228(client):
    literal_rejected(client, {"type": "filter", "payload": {
        "array": {"a": 1}, "filter": {"a": {"$eq": 1}}}}, "array")


def test_literal_missing_filter_is_400228(client):
    literal_rejected(client, {"type": "filter", "payload": {"array": []}}, "filter")


def test_literal_unknown_operator_is_400228(client):
    [message] = literal_rejected(client, {"type": "filter", "payload": {
        "array": [], "condition": {"amount": {"$between": [1, 2]}}}}, "condition")
    assert "unknown operator '$between'" in message


def test_array_resolving_to_wrong_type_is_invalid_input():
    out = run_nodes("root>f", payload={"txs": {"a": 1}},
                    f={"type": "filter", "payload": {"array": "{{root.result.txs}}",
                                                     "filter": {"a": {"$eq": 1}}}})
    assert "array: Not a valid array." in failed_with(out, "f")


def test_bad_key_path_fails_even_on_an_empty_array():
    error = node_error(filter_, {"array": [], "filter": {"a..b": {"$eq": 1}}})
    assert error.code == "INVALID_INPUT"
    assert "'a..b'" in error.message


def test_malformed_condition_from_an_expression_is_invalid_input():
    out = run_nodes("root>f", payload={"cond": {"a": {"$in": 3}}},
                    f={"type": "filter", "payload": {"array": [],
                                                     "filter": "{{root.result.cond}}"}})
    assert "filter.a.$in: must be an array" in failed_with(out, "f")


def test_an_item_field_where_an_array_belongs_is_invalid_input():
    out = run_nodes("root>f", f={"type": "filter", "payload": {
        "array": [{"amount": 1, "tags": [1]}],
        "filter": {"{{@amount}}": {"$in": "{{@tags}}"}}}})
    assert failed_with(out, "f") == "filter.{{@amount}}.$in: must be an array."


def test_a_malformed_array_is_reported_before_the_condition():
    out = run_nodes("root>f", payload={"txs": {"a": 1}},
                    f={"type": "filter", "payload": {"array": "{{root.result.txs}}",
                                                     "filter": {"a": {"$in": "{{@tags}}"}}}})
    assert failed_with(out, "f") == "array: Not a valid array."


# -- cancellation and hashing (SPEC §3) ----------------------------------------------

def test_a_long_filter_stops_at_the_deadline():
    items, reads = counted_items(20_000)
    times_out(filter_, {"array": items, "filter": {"i": {"$gte": 0}}})
    assert 0 < reads[0] < 20_000


def test_deep_comparisons_inside_one_item_stop_at_the_deadline():
    values = [[n] for n in range(20_000)]  # arrays: no hashing, a search per item
    items, reads = counted_items(3)
    times_out(filter_, {"array": items, "filter": {"i": {"$in": values}}})
    assert reads[0] == 1  # stopped inside the first item's search


def test_in_hashes_a_scalar_list_once_for_all_items(monkeypatch):
    calls = [0]
    real_equal = conditions.equal

    def counted_equal(*args):
        calls[0] += 1
        return real_equal(*args)
    monkeypatch.setattr(conditions, "equal", counted_equal)
    values = [str(n) for n in range(0, 600, 2)] + [True, None]
    kept_items = call(filter_, {"array": list(range(300)), "filter": {"@": {"$in": values}}})
    assert kept_items["filtered"] == list(range(0, 300, 2))
    assert calls[0] == 0  # a linear search would make 300 × 302 comparisons
    left_out = call(filter_, {"array": ["0", 0.0, "0.0", False], "filter": {"@": {"$nin": values}}})
    assert left_out["filtered"] == ["0.0", False]


def test_a_filter_cut_by_its_time_limit_stops_burning_cpu():
    values = [[n] for n in range(20_000)]
    assert_no_cpu_after({"type": "filter", "payload": {
        "array": "{{root.result.items}}", "filter": {"@": {"$in": values}}}},
        payload={"items": [[-n] for n in range(20_000)]})
