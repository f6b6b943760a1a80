"""The ``list-max`` node."""
from __future__ import annotations

from app.nodes import list_max
from tests.helpers import run_nodes
from tests.nodes.support_limits import counted_items, times_out
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error


def largest(array, **payload) -> dict:
    return call(list_max, {"array": array, **payload})


def test_numbers():
    assert largest([3, 7.5, 1]) == {"max": 7.5, "index": 1, "item": 7.5}


def test_numeric_strings_compare_as_numbers_and_stay_strings():
    assert largest(["9", "10", 8]) == {"max": "10", "index": 1, "item": "10"}


def test_big_amounts_compare_exactly():
    assert largest([1e21, "1000000000000000000001"])["index"] == 1


def test_first_of_equal_values_wins():
    assert largest([1, "2", 2.0, 2])["index"] == 1


def test_field_path():
    rows = [{"v": "5"}, {"v": 50}, {"w": 500}]
    assert largest(rows, field="v") == {"max": 50, "index": 1, "item": {"v": 50}}


def test_plain_strings_only_without_numbers():
    assert largest(["b", "a", None])["max"] == "b"
    assert largest(["zzz", "1"])["max"] == "1"


def test_booleans_are_not_numbers():
    assert largest([True, 0])["max"] == 0


def test_in_a_workflow():
    out = run_nodes("root>m", payload={"n": [1, "20", 3]},
                    m={"type": "list-max", "payload": {"array": "{{root.result.n}}"}})
    assert out["executionState"]["m"]["result"] == {"max": "20", "index": 1, "item": "20"}


# -- errors ------------------------------------------------------------------

def test_empty_array_is_invalid_input():
    assert node_error(list_max, {"array": []}).code == "INVALID_INPUT"


def test_no_comparable_value_is_invalid_input():
    error = node_error(list_max, {"array": [{"v": 1}], "field": "w"})
    assert error.code == "INVALID_INPUT"
    assert "comparable" in error.message


def test_literal_field_of_wrong_type_is_400228(client):
    literal_rejected(client, {"type": "list-max", "payload": {"array": [], "field": 3}},
                     "field")


def test_field_resolving_to_wrong_type_is_invalid_input():
    out = run_nodes("root>m", payload={"f": ["v"]},
                    m={"type": "list-max", "payload": {"array": [{"v": 1}],
                                                       "field": "{{root.result.f}}"}})
    assert "field: Not a valid string." in failed_with(out, "m")


def test_a_long_array_stops_at_the_deadline():
    items, reads = counted_items(20_000)
    times_out(list_max, {"array": items, "field": "i"})
    assert 0 < reads[0] < 20_000
