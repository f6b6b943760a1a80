"""The ``format`` node: a template over an array or an object."""
from __future__ import annotations

from app.nodes import format_
from app.nodes.base import MAX_TEXT_CHARS
from tests.helpers import run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error, schema_errors

ROWS = [{"sym": "ETH", "price": 1850.5}, {"sym": "BTC", "price": 2.0}]


def formatted(data, template: str, **extra) -> str:
    return call(format_, {"data": data, "template": template, **extra})["formatted"]


def test_array_renders_per_item_joined_by_newline():
    assert formatted(ROWS, "{{@sym}}: {{@price}}") == "ETH: 1850.5\nBTC: 2"


def test_custom_separator():
    assert formatted(ROWS, "{{@sym}}", separator=", ") == "ETH, BTC"
    assert formatted(ROWS, "{{@sym}}", separator="") == "ETHBTC"


def test_object_renders_once():
    assert formatted({"user": {"name": "Zoë"}}, "Hi {{@user.name}}!") == "Hi Zoë!"


def test_a_leading_zero_names_the_key_as_written():
    months = [{"m": {"01": "Jan", "1": "one"}}, {"m": {"1": "one"}}, {"m": ["a", "b"]}]
    assert formatted(months, "[{{@m.01}}|{{@m[01]}}|{{@m.1}}]", separator=" ") == (
        "[Jan|Jan|one] [||one] [||b]")


def test_missing_and_null_render_empty():
    assert formatted([{"a": None}, {}], "[{{@a}}|{{@b.c}}]") == "[|]\n[|]"


def test_values_follow_the_text_rules():
    item = {"t": True, "f": False, "big": 1e21, "small": 0.1, "obj": {"k": "é", "n": [1, 2.5]}}
    assert formatted(item, "{{@t}} {{@f}} {{@big}} {{@small}} {{@obj}}") == (
        'true false 1e+21 0.1 {"k":"é","n":[1,2.5]}')


def test_the_item_itself_and_whitespace_in_holes():
    assert formatted(["a", 1, None], "- {{@}}") == "- a\n- 1\n- "
    assert formatted({"a": 1}, "{{ @a }}") == "1"


def test_index_paths():
    assert formatted({"rows": [{"id": 7}]}, "{{@rows.0.id}} {{@rows[0].id}}") == "7 7"


def test_empty_array_gives_empty_text():
    assert formatted([], "{{@sym}}") == ""


def test_template_without_holes_repeats_per_item():
    assert formatted([1, 2, 3], "x", separator="") == "xxx"


def test_run_expressions_resolve_before_and_item_holes_stay_for_the_node():
    out = run_nodes("root>fmt", payload={"rows": ROWS, "unit": "USD"},
                    fmt={"type": "format", "payload": {
                        "data": "{{root.result.rows}}",
                        "template": "{{@sym}} = {{@price}} {{root.result.unit}}"}})
    state = out["executionState"]["fmt"]
    assert state["input"]["template"] == "{{@sym}} = {{@price}} USD"
    assert state["result"] == {"formatted": "ETH = 1850.5 USD\nBTC = 2 USD"}


# -- errors ------------------------------------------------------------------

def test_data_and_template_are_required():
    errors = schema_errors(format_, {})
    assert set(errors) == {"data", "template"}


def test_null_data_is_refused():
    assert "data" in schema_errors(format_, {"data": None, "template": "x"})


def test_literal_data_of_wrong_type_is_400228(client):
    [message] = literal_rejected(client, {"type": "format", "payload": {
        "data": "just text", "template": "{{@a}}"}}, "data")
    assert message == "Must be an array or an object."


def test_literal_bad_item_path_is_400228(client):
    [message] = literal_rejected(client, {"type": "format", "payload": {
        "data": [], "template": "{{@a..b}}"}}, "template")
    assert "'a..b'" in message


def test_literal_separator_of_wrong_type_is_400228(client):
    literal_rejected(client, {"type": "format", "payload": {
        "data": [], "template": "x", "separator": 1}}, "separator")


def test_data_resolving_to_a_number_is_invalid_input():
    out = run_nodes("root>fmt", payload={"n": 3},
                    fmt={"type": "format", "payload": {"data": "{{root.result.n}}",
                                                       "template": "{{@a}}"}})
    assert "data: Must be an array or an object." in failed_with(out, "fmt")


def test_output_larger_than_the_text_limit_is_refused():
    error = node_error(format_, {"data": [0] * 1000, "template": "y" * 5000})
    assert error.code == "INVALID_INPUT" and str(MAX_TEXT_CHARS) in error.message


def test_a_one_name_path_reads_objects_only_and_writes_integers_in_full():
    items = [{"n": 12345678901234567890}, ["n"], "n", 7, {"n": -3}, {"n": True}, {"m": 1}]
    assert formatted(items, "<{{@n}}>", separator="") == (
        "<12345678901234567890><><><><-3><true><>")
