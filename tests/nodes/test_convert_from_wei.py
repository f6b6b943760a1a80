"""The ``convert-from-wei`` node: exact base units → decimal."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.nodes import convert_from_wei, convert_to_wei
from tests.helpers import run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected, node_error


def value(wei, **payload) -> str:
    return call(convert_from_wei, {"wei": wei, **payload})["value"]


def test_six_decimals():
    assert value("3750000", decimals=6) == "3.75"


def test_default_is_18_decimals():
    assert value("1000000000000000000") == "1"
    assert value("1") == "0.000000000000000001"
    assert value("1500000000000000000") == "1.5"


def test_trailing_zeros_and_point_are_trimmed():
    assert value("100", decimals=2) == "1"
    assert value("120", decimals=2) == "1.2"
    assert value("0") == "0"
    assert value("000", decimals=3) == "0"


def test_zero_decimals():
    assert value("12345", decimals=0) == "12345"
    assert value("007", decimals=0) == "7"


def test_json_integers():
    assert value(3750000, decimals=6) == "3.75"
    assert value(10**21) == "1000"
    assert value(1e21) == "1000"  # an integral JSON number


def test_negative():
    assert value("-1500", decimals=3) == "-1.5"
    assert value("-0", decimals=3) == "0"


def test_big_values_are_exact():
    assert value("1" * 100, decimals=77) == "1" * 23 + "." + "1" * 77
    assert value("1" + "0" * 77, decimals=77) == "1"


@given(st.integers(min_value=-10**90, max_value=10**90), st.integers(min_value=0, max_value=77))
def test_round_trip(amount, decimals):
    text = call(convert_from_wei, {"wei": str(amount), "decimals": decimals})["value"]
    assert not text.endswith(".") and not (("." in text) and text.endswith("0"))
    back = call(convert_to_wei, {"value": text, "decimals": decimals})["wei"]
    assert back == str(amount)


def test_in_a_workflow():
    out = run_nodes("root>v", payload={"balance": "3750000"},
                    v={"type": "convert-from-wei", "payload": {"wei": "{{root.result.balance}}",
                                                               "decimals": 6}})
    assert out["executionState"]["v"]["result"] == {"value": "3.75"}


# -- errors ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1.5", "1e3", "0x10", " 1", "", "+1", "abc", "1_000", "٣"])
def test_not_an_integer_string_is_invalid_input(text):
    error = node_error(convert_from_wei, {"wei": text})
    assert error.code == "INVALID_INPUT"
    assert "not an integer" in error.message


@pytest.mark.parametrize("payload,field", [
    ({"wei": 1.5}, "wei"),
    ({"wei": True}, "wei"),
    ({"wei": None}, "wei"),
    ({}, "wei"),
    ({"wei": "1", "decimals": 78}, "decimals"),
    ({"wei": "1", "decimals": "6"}, "decimals"),
])
def test_literal_invalid_payload_is_400228(client, payload, field):
    literal_rejected(client, {"type": "convert-from-wei", "payload": payload}, field)


def test_wei_resolving_to_a_fraction_is_invalid_input():
    out = run_nodes("root>v", payload={"w": 2.5},
                    v={"type": "convert-from-wei", "payload": {"wei": "{{root.result.w}}"}})
    assert "wei: Must be an integer string or an integer." in failed_with(out, "v")


def test_hex_from_the_trigger_fails_the_node():
    out = run_nodes("root>v", payload={"w": "0x1bc16d674ec80000"},
                    v={"type": "convert-from-wei", "payload": {"wei": "{{root.result.w}}"}})
    assert "not an integer" in failed_with(out, "v")
