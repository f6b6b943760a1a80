"""The ``list-min`` node (and the comparison rules it shares with ``list-max``)."""
from __future__ import annotations

from app.nodes import list_min
from tests.helpers import run_nodes
from tests.nodes.support_limits import assert_no_cpu_after, counted_items, times_out
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error


def smallest(array, **payload) -> dict:
    return call(list_min, {"array": array, **payload})


def test_numbers():
    assert smallest([3, 1.5, 7]) == {"min": 1.5, "index": 1, "item": 1.5}


def test_numeric_strings_compare_as_numbers_and_stay_strings():
    assert smallest(["10", "9", 11]) == {"min": "9", "index": 1, "item": "9"}
    assert smallest(["-1e3", "5"])["min"] == "-1e3"


def test_big_amounts_compare_exactly():
    assert smallest(["1000000000000000000001", 1e21])["index"] == 1
    assert smallest([1e21, "999999999999999999999"])["index"] == 1


def test_first_of_equal_values_wins():
    assert smallest([2, "1", 1, 1.0])["index"] == 1


def test_field_path_and_items_without_it_are_skipped():
    rows = [{"p": {"v": 5}}, {"p": {}}, {"p": {"v": "2"}}, 7, {"p": {"v": None}}]
    assert smallest(rows, field="p.v") == {"min": "2", "index": 2, "item": {"p": {"v": "2"}}}


def test_non_numbers_are_skipped_when_numbers_exist():
    assert smallest(["apple", True, None, {"a": 1}, [0], 4, "0x01"]) == {
        "min": 4, "index": 5, "item": 4}


def test_booleans_are_not_numbers():
    assert smallest([False, 3])["min"] == 3


def test_plain_strings_compare_when_there_is_no_number():
    assert smallest(["pear", "Apple", "apple", None]) == {
        "min": "Apple", "index": 1, "item": "Apple"}
    assert smallest(["é", "z"])["min"] == "z"  # code point order


def test_in_a_workflow():
    out = run_nodes("root>m", payload={"quotes": [{"dex": "a", "out": "1500"},
                                                  {"dex": "b", "out": "1499.99"}]},
                    m={"type": "list-min", "payload": {"array": "{{root.result.quotes}}",
                                                       "field": "out"}})
    assert out["executionState"]["m"]["result"] == {
        "min": "1499.99", "index": 1, "item": {"dex": "b", "out": "1499.99"}}


# -- errors ------------------------------------------------------------------

def test_empty_array_is_invalid_input():
    error = node_error(list_min, {"array": []})
    assert error.code == "INVALID_INPUT"
    assert "empty" in error.message


def test_no_comparable_value_is_invalid_input():
    error = node_error(list_min, {"array": [None, True, {}, []]})
    assert error.code == "INVALID_INPUT"
    assert "comparable" in error.message
    assert "field 'x'" in node_error(list_min, {"array": [{"y": 1}], "field": "x"}).message


def test_literal_array_of_wrong_type_is_400228(client):
    literal_rejected(client, {"type": "list-min", "payload": {"array": "1,2,3"}}, "array")


def test_literal_bad_field_is_400228(client):
    literal_rejected(client, {"type": "list-min", "payload": {"array": [], "field": "a."}},
                     "field")


def test_array_resolving_to_wrong_type_is_invalid_input():
    out = run_nodes("root>m", payload={"n": "1,2"},
                    m={"type": "list-min", "payload": {"array": "{{root.result.n}}"}})
    assert "array: Not a valid array." in failed_with(out, "m")


def test_empty_array_from_an_expression_fails_the_node():
    out = run_nodes("root>m", payload={"n": []},
                    m={"type": "list-min", "payload": {"array": "{{root.result.n}}"}})
    assert "empty" in failed_with(out, "m")


# -- the deadline (SPEC §3) ----------------------------------------------------------

def test_a_long_array_stops_at_the_deadline():
    items, reads = counted_items(20_000)
    times_out(list_min, {"array": items, "field": "i"})
    assert 0 < reads[0] < 20_000


def test_one_pass_keeps_the_first_of_equal_values_and_strings_only_without_numbers():
    assert smallest([{"v": "b"}, {"v": 2}, {"v": "a"}, {"v": "2"}], field="v")["index"] == 1
    assert smallest([{"v": "b"}, {"v": "a"}, {"v": "a"}], field="v")["index"] == 1


def test_a_list_min_cut_by_its_time_limit_stops_burning_cpu():
    assert_no_cpu_after({"type": "list-min", "payload": {"array": "{{root.result.a}}"}},
                        payload={"a": [0] * 1_500_000})
