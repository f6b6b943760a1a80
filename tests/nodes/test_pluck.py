"""The ``pluck`` node: fields out of every item."""
from __future__ import annotations

from app.nodes import pluck
from tests.helpers import run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error, schema_errors

ITEMS = [
    {"id": 1, "token": {"symbol": "ETH"}, "tags": ["a", "b"], "名前": "イーサ"},
    {"id": 2, "token": {}, "tags": []},
    {"id": None},
    42,
]


def values(**payload) -> list:
    return call(pluck, {"array": ITEMS, **payload})["values"]


def test_one_field():
    assert values(field="id") == [1, 2, None, None]


def test_nested_and_index_paths_with_null_where_missing():
    assert values(field="token.symbol") == ["ETH", None, None, None]
    assert values(field="tags.1") == ["b", None, None, None]
    assert values(field="tags[0]") == ["a", None, None, None]


def test_a_leading_zero_names_the_key_as_written():
    items = [{"months": {"01": "Jan", "1": "one"}}, {"months": {"1": "one"}},
             {"months": ["a", "b"]}]
    assert call(pluck, {"array": items, "field": "months.01"})["values"] == ["Jan", None, None]
    assert call(pluck, {"array": items, "field": "months[01]"})["values"] == ["Jan", None, None]
    assert call(pluck, {"array": items, "field": "months.1"})["values"] == ["one", "one", "b"]


def test_unicode_key():
    assert values(field="名前") == ["イーサ", None, None, None]


def test_values_are_returned_as_found():
    assert values(field="token") == [{"symbol": "ETH"}, {}, None, None]


def test_several_fields_give_objects_keyed_by_path():
    assert values(fields=["id", "token.symbol"]) == [
        {"id": 1, "token.symbol": "ETH"}, {"id": 2, "token.symbol": None},
        {"id": None, "token.symbol": None}, {"id": None, "token.symbol": None}]


def test_a_single_entry_in_fields_gives_plain_values():
    assert values(fields=["id"]) == [1, 2, None, None]


def test_empty_array():
    assert call(pluck, {"array": [], "field": "id"}) == {"values": []}


def test_in_a_workflow():
    out = run_nodes("root>p", payload={"rows": ITEMS[:2]},
                    p={"type": "pluck", "payload": {"array": "{{root.result.rows}}",
                                                    "field": "token.symbol"}})
    assert out["executionState"]["p"]["result"] == {"values": ["ETH", None]}


# -- errors ------------------------------------------------------------------

def test_field_or_fields_is_required():
    assert "field" in schema_errors(pluck, {"array": []})


def test_field_and_fields_together_are_refused():
    assert schema_errors(pluck, {"array": [], "field": "a", "fields": ["b"]}) == {
        "fields": ["Give 'field' or 'fields', not both."]}


def test_empty_fields_is_refused():
    assert "fields" in schema_errors(pluck, {"array": [], "fields": []})


def test_literal_bad_path_is_400228(client):
    [message] = literal_rejected(client, {"type": "pluck", "payload": {
        "array": [], "field": "token..symbol"}}, "field")
    assert "empty segment" in message


def test_literal_non_string_in_fields_is_400228(client):
    literal_rejected(client, {"type": "pluck", "payload": {
        "array": [], "fields": ["a", 5]}}, "fields[1]")


def test_literal_missing_array_is_400228(client):
    literal_rejected(client, {"type": "pluck", "payload": {"field": "a"}}, "array")


def test_field_resolving_to_a_number_is_invalid_input():
    out = run_nodes("root>p", payload={"f": 5},
                    p={"type": "pluck", "payload": {"array": [], "field": "{{root.result.f}}"}})
    assert "field: Not a valid string." in failed_with(out, "p")


def test_field_resolving_to_a_bad_path_is_invalid_input():
    out = run_nodes("root>p", payload={"f": "a[0"},
                    p={"type": "pluck", "payload": {"array": [], "field": "{{root.result.f}}"}})
    assert "Invalid field path 'a[0'" in failed_with(out, "p")


def test_too_many_values_are_refused_not_built():
    error = node_error(pluck, {"array": [{}] * 2000, "fields": [f"f{i}" for i in range(600)]})
    assert error.code == "INVALID_INPUT"


def test_a_one_name_path_reads_objects_only():
    array = [{"a": 1}, ["a"], "a", {"b": 2}, {"a": None}, {"a": {"x": [1]}}]
    assert call(pluck, {"array": array, "field": "a"})["values"] == [
        1, None, None, None, None, {"x": [1]}]
