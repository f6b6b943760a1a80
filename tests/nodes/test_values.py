"""Item paths and numeric values shared by the data nodes."""
from __future__ import annotations

from decimal import Decimal

import pytest

from app.expressions import MISSING
from app.nodes.values import at_path, number, parse_path


@pytest.mark.parametrize("text,segments", [
    ("", ()), ("  ", ()), ("a", ("a",)), ("token.symbol", ("token", "symbol")),
    ("rows.0.id", ("rows", 0, "id")), ("rows[0].id", ("rows", 0, "id")),
    ("[1][2]", (1, 2)), (" a . b ", ("a", "b")), ("key with spaces", ("key with spaces",)),
    ("a-b.$c", ("a-b", "$c")), ("名前", ("名前",)), ("²", ("²",)),
])
def test_parse_path(text, segments):
    assert parse_path(text) == segments


@pytest.mark.parametrize("text", ["a..b", ".a", "a.", "a[0", "a]", "a[x]", "a.[0]"])
def test_bad_paths(text):
    with pytest.raises(ValueError):
        parse_path(text)


def test_at_path():
    item = {"rows": [{"id": 7}], "0": "zero"}
    assert at_path(item, parse_path("rows.0.id")) == 7
    assert at_path(item, parse_path("0")) == "zero"
    assert at_path(item, parse_path("rows.1")) is MISSING
    assert at_path(5, parse_path("a")) is MISSING
    assert at_path(item, ()) is item


@pytest.mark.parametrize("value,expected", [
    (3, Decimal(3)), (0.1, Decimal("0.1")), (1e21, Decimal(10**21)), ("-1.5e3", Decimal(-1500)),
    ("007", Decimal(7)), ("1000000000000000000001", Decimal(10**21 + 1)),
])
def test_numeric(value, expected):
    assert number(value) == expected


@pytest.mark.parametrize("value", [
    True, False, None, "", " 1", "+1", ".5", "5.", "0x10", "1_000", "NaN", "Infinity",
    float("inf"), float("nan"), "١", [1], {"a": 1},
])
def test_not_numeric(value):
    assert number(value) is None


@pytest.mark.parametrize("text,segments", [
    ("months.01", ("months", "01")), ("months[01]", ("months", "01")),
    ("rows.00", ("rows", "00")), ("rows.10", ("rows", 10)), ("[0]", (0,)), ("01", ("01",)),
])
def test_only_canonical_numbers_are_indexes(text, segments):
    assert parse_path(text) == segments


def test_a_leading_zero_names_the_key_as_written():
    item = {"months": {"01": "Jan", "1": "one"}, "one": {"1": "one"}, "rows": ["a", "b"],
            "keyed": {"0": "zero"}}
    assert at_path(item, parse_path("months.01")) == "Jan"
    assert at_path(item, parse_path("months[01]")) == "Jan"
    assert at_path(item, parse_path("one.01")) is MISSING
    assert at_path(item, parse_path("rows.01")) is MISSING
    assert at_path(item, parse_path("rows.1")) == "b"
    assert at_path(item, parse_path("keyed.0")) == "zero"


def test_long_paths_parse_in_linear_time():
    import time
    started = time.perf_counter()
    for text in ["a" + " " * 200_000 + "x", "a[1]" + " " * 200_000 + "x",
                 ".".join(["a"] * 100_000), "a" + "[1]" * 100_000]:
        try:
            parse_path(text)
        except ValueError as error:
            assert len(str(error)) < 300
    assert time.perf_counter() - started < 1
