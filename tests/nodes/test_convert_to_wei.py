"""The ``convert-to-wei`` node: exact decimal → base units."""
from __future__ import annotations

import pytest

from app.nodes import convert_to_wei
from tests.helpers import definition, post_run, run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error


def wei(value, **payload) -> str:
    return call(convert_to_wei, {"value": value, **payload})["wei"]


def test_string_and_number_with_six_decimals():
    assert wei("3.75", decimals=6) == "3750000"
    assert wei(3.75, decimals=6) == "3750000"


def test_default_is_18_decimals():
    assert wei("1") == "1" + "0" * 18
    assert wei(1) == "1" + "0" * 18


def test_float_uses_its_shortest_repr_not_binary_math():
    assert wei(0.1) == "100000000000000000"  # 0.1 * 10**18 in floats is 1.0000000000000000555e17
    assert wei(1e21, decimals=0) == "1" + "0" * 21
    assert wei(1.1e-17) == "11"
    assert wei(3.0, decimals=0) == "3"


def test_trailing_zeros_do_not_count_as_precision():
    assert wei("1.500", decimals=1) == "15"
    assert wei("2.000000", decimals=0) == "2"


def test_leading_zeros_and_zero():
    assert wei("007.5", decimals=1) == "75"
    assert wei("0", decimals=18) == "0"
    assert wei("0.000", decimals=2) == "0"


def test_negative_amounts():
    assert wei("-1.5", decimals=2) == "-150"
    assert wei("-0.0", decimals=2) == "0"  # no negative zero
    assert wei(-2, decimals=1) == "-20"


def test_big_values_are_exact():
    amount = "123456789012345678901234567890.123456789012345678"
    assert wei(amount) == "123456789012345678901234567890123456789012345678"
    assert wei("1", decimals=77) == "1" + "0" * 77


def test_smallest_unit_and_full_precision():
    assert wei("0.000000000000000001") == "1"
    assert wei("3.75", decimals=2) == "375"


def test_in_a_workflow():
    out = run_nodes("root>w", payload={"amount": "3.75"},
                    w={"type": "convert-to-wei", "payload": {"value": "{{root.result.amount}}",
                                                             "decimals": 6}})
    assert out["executionState"]["w"]["result"] == {"wei": "3750000"}


# -- errors ------------------------------------------------------------------

def test_more_fraction_digits_than_decimals_is_invalid_input():
    error = node_error(convert_to_wei, {"value": "3.755", "decimals": 2})
    assert error.code == "INVALID_INPUT"
    assert "nothing is rounded" in error.message
    assert node_error(convert_to_wei, {"value": "0.0000000000000000001"}).code == "INVALID_INPUT"
    assert node_error(convert_to_wei, {"value": 0.5, "decimals": 0}).code == "INVALID_INPUT"


@pytest.mark.parametrize("text", [
    "1e3", "1E3", "0x10", " 1", "1 ", "1,5", "+1", "", ".5", "5.", "NaN", "Infinity", "--1",
    "1.2.3", "١٢", "½",
])
def test_not_a_plain_decimal_is_invalid_input(text):
    error = node_error(convert_to_wei, {"value": text})
    assert error.code == "INVALID_INPUT"
    assert "not a plain decimal" in error.message


@pytest.mark.parametrize("payload,field", [
    ({"value": True}, "value"),
    ({"value": None}, "value"),
    ({"value": [1]}, "value"),
    ({}, "value"),
    ({"value": "1", "decimals": 78}, "decimals"),
    ({"value": "1", "decimals": -1}, "decimals"),
    ({"value": "1", "decimals": "18"}, "decimals"),
    ({"value": "1", "decimals": 1.5}, "decimals"),
])
def test_literal_invalid_payload_is_400228(client, payload, field):
    literal_rejected(client, {"type": "convert-to-wei", "payload": payload}, field)


def test_value_resolving_to_an_object_is_invalid_input():
    out = run_nodes("root>w", payload={"amount": {"v": 1}},
                    w={"type": "convert-to-wei", "payload": {"value": "{{root.result.amount}}"}})
    assert "value: Must be a decimal string or a number." in failed_with(out, "w")


def test_decimals_resolving_out_of_range_is_invalid_input():
    out = run_nodes("root>w", payload={"d": 100},
                    w={"type": "convert-to-wei", "payload": {"value": "1",
                                                             "decimals": "{{root.result.d}}"}})
    assert failed_with(out, "w").startswith("decimals:")


def test_unparsable_value_from_the_trigger_fails_the_node_not_the_request():
    out = run_nodes("root>w", payload={"amount": "1e18"},
                    w={"type": "convert-to-wei", "payload": {"value": "{{root.result.amount}}"}})
    assert "'1e18' is not a plain decimal" in failed_with(out, "w")


def test_literal_unparsable_value_fails_the_node_not_the_request(client):
    body = {"definition": definition("root>w", w={"type": "convert-to-wei",
                                                  "payload": {"value": "abc"}})}
    response = post_run(client, body)
    assert response.status_code == 200
    assert response.json["executionState"]["w"]["error"]["code"] == "INVALID_INPUT"
