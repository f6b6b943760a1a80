"""The condition DSL shared by ``if`` and ``filter`` (SPEC §5), tested directly."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from app.expressions import MISSING
from app.nodes import condition_check, conditions
from app.nodes.base import NodeError
from app.nodes.conditions import _in, check, equal, evaluate, literal_validator, lookup, ticks
from tests.nodes.support_limits import counting_ctx


def holds(condition: dict, **values) -> bool:
    """Evaluate with left keys read from ``values`` (absent → MISSING)."""
    return evaluate(condition, lambda key: values.get(key, MISSING))


def op(name: str, left, right) -> bool:
    """One operator on one left value."""
    return holds({"$and": [{"x": {name: right}}]}, x=left)


def invalid(condition) -> str:
    with pytest.raises(NodeError) as caught:
        holds(condition, a=1, b=2)
    assert caught.value.code == "INVALID_INPUT"
    assert caught.value.retryable is False
    return caught.value.message


# -- $eq / $ne ---------------------------------------------------------------

@pytest.mark.parametrize("left,right", [
    ("100", 100), (100, "100"), ("100.0", 100), ("1e3", 1000), (0.1, "0.1"), (1, 1.0),
    ("1000000000000000000000", 1e21), (10**21, "1000000000000000000000"),
    ("abc", "abc"), (None, None), ([1, "2"], ["1", 2]), ({"a": [1]}, {"a": ["1"]}),
    (True, True), ("é", "é"),
])
def test_eq_holds(left, right):
    assert op("$eq", left, right) is True
    assert op("$ne", left, right) is False


@pytest.mark.parametrize("left,right", [
    ("1000000000000000000001", 1e21),  # a float comparison would call these equal
    ("1.0", "1"),  # two strings compare as strings
    ("007", "7"),
    (True, 1), (1, True), (False, 0), (True, "true"), (None, 0), (None, ""), ("", 0),
    ("abc", 0), ([1], [1, 1]), ({"a": 1}, {"a": 1, "b": 2}), ([True], [1]), ("1", [1]),
    (float("nan"), float("nan")),
])
def test_eq_fails(left, right):
    assert op("$eq", left, right) is False
    assert op("$ne", left, right) is True


def test_missing_equals_null():
    assert holds({"$and": [{"gone": {"$eq": None}}]}) is True
    assert holds({"$and": [{"gone": {"$ne": None}}]}) is False


# -- ordering ----------------------------------------------------------------

@pytest.mark.parametrize("left,right,gt,gte,lt,lte", [
    (5, 3, True, True, False, False),
    ("10", "9", True, True, False, False),  # numeric strings compare as numbers
    ("10", 9, True, True, False, False),
    ("2", "2.00", False, True, False, True),
    ("1000000000000000000001", 1e21, True, True, False, False),
    ("-1.5", "-1", False, False, True, True),
    ("1e3", 999, True, True, False, False),
    ("b", "a", True, True, False, False),
    ("apple", "apple", False, True, False, True),
    ("Z", "a", False, False, True, True),  # code point order
    ("0x10", 3, False, False, False, False),  # hex is not numeric
    ("abc", 5, False, False, False, False),
    (True, False, False, False, False, False),
    (1, True, False, False, False, False),
    (None, 0, False, False, False, False),
    ([2], [1], False, False, False, False),
])
def test_ordering(left, right, gt, gte, lt, lte):
    assert [op(o, left, right) for o in ("$gt", "$gte", "$lt", "$lte")] == [gt, gte, lt, lte]


def test_ordering_of_a_missing_value_is_false():
    assert not any(holds({"$and": [{"gone": {o: 0}}]}) for o in ("$gt", "$gte", "$lt", "$lte"))


# -- membership and text -----------------------------------------------------

def test_in_uses_eq():
    assert op("$in", "5", [1, 5]) is True
    assert op("$in", True, [1]) is False
    assert op("$in", None, [None]) is True
    assert op("$in", "x", []) is False
    for negation in ("$nin", "$notIn"):
        assert op(negation, "5", [1, 5]) is False
        assert op(negation, 2, [1, 5]) is True


def test_contains_substring_and_element():
    assert op("$contains", "hello world", "lo w") is True
    assert op("$contains", "héllo", "é") is True
    assert op("$contains", "hello", "") is True
    assert op("$contains", "Hello", "hello") is False  # case-sensitive
    assert op("$contains", ["a", 5], "5") is True  # element by $eq
    assert op("$contains", [[1, 2]], [1, 2]) is True
    assert op("$contains", "abc123", 123) is False  # a substring must be a string
    assert op("$contains", None, "a") is False
    assert op("$notContains", None, "a") is True
    assert op("$notContains", "hello", "z") is True
    assert op("$notContains", ["a"], "a") is False


def test_starts_and_ends_with_strings_only():
    assert op("$startsWith", "0xdeadbeef", "0x") is True
    assert op("$startsWith", "日本語", "日本") is True
    assert op("$endsWith", "report.csv", ".csv") is True
    assert op("$endsWith", "report.csv", ".txt") is False
    assert op("$startsWith", 12345, "12") is False
    assert op("$endsWith", "12345", 45) is False
    assert op("$startsWith", ["a"], "a") is False


@pytest.mark.parametrize("value,exists", [
    (0, True), ("", True), (False, True), ([], True), (None, False), (MISSING, False),
])
def test_exists_and_not_exists(value, exists):
    values = {} if value is MISSING else {"x": value}
    assert holds({"x": {"$exists": True}}, **values) is exists
    assert holds({"x": {"$exists": False}}, **values) is (not exists)
    assert holds({"x": {"$notExists": True}}, **values) is (not exists)
    assert holds({"x": {"$notExists": False}}, **values) is exists


# -- combination -------------------------------------------------------------

def test_empty_and_holds_empty_or_does_not():
    assert holds({"$and": []}) is True
    assert holds({"$or": []}) is False


def test_and_or_nesting():
    condition = {"$or": [{"a": {"$gt": 10}}, {"$and": [{"a": {"$gt": 0}}, {"b": {"$eq": "y"}}]}]}
    assert holds(condition, a=5, b="y") is True
    assert holds(condition, a=5, b="n") is False
    assert holds(condition, a=11, b="n") is True


def test_every_operator_in_one_object_must_hold():
    between = {"$and": [{"a": {"$gt": 1, "$lt": 10}}]}
    assert holds(between, a=5) is True
    assert holds(between, a=10) is False
    assert holds(between, a=0) is False


def test_every_key_in_one_element_must_hold():
    condition = {"$and": [{"a": {"$eq": 1}, "b": {"$eq": 2}}]}
    assert holds(condition, a=1, b=2) is True
    assert holds(condition, a=1, b=3) is False


def test_a_bare_element_is_accepted_at_the_top_level():
    assert holds({"a": {"$eq": 1}}, a=1) is True


def test_older_form_operator_to_pair():
    assert holds({"$gt": [150, 100]}) is True
    assert holds({"$gt": ["99", 100]}) is False
    assert holds({"$and": [{"$eq": ["a", "a"]}, {"$in": [2, [1, 2]]}]}) is True


def test_older_form_left_goes_through_operand():
    seen = []

    def operand(value):
        seen.append(value)
        return 500

    assert evaluate({"$gt": ["{{@amount}}", 100]}, lambda key: MISSING, operand) is True
    assert seen == ["{{@amount}}"]


def test_left_keys_are_resolved_by_the_caller():
    asked = []

    def left(key):
        asked.append(key)
        return 7

    assert evaluate({"$and": [{"{{root.result.n}}": {"$eq": 7}}]}, left) is True
    assert asked == ["{{root.result.n}}"]


# -- malformed conditions ----------------------------------------------------

def test_unknown_operator_names_it_and_where():
    message = invalid({"$and": [{"a": {"$eq": 1}}, {"b": {"$bogus": 1}}]})
    assert "'$bogus'" in message
    assert "condition.$and[1].b.$bogus" in message
    assert "$gte" in message  # the known operators are listed


def test_every_operator_the_check_knows_is_implemented_and_no_other():
    assert tuple(conditions.OPERATORS) == condition_check.OPERATOR_NAMES


def test_the_check_is_the_same_through_conditions():
    assert (conditions.check, conditions.ConditionError, conditions.literal_validator) == (
        condition_check.check, condition_check.ConditionError, condition_check.literal_validator)


def test_structure_is_checked_before_short_circuit():
    # The first element already decides the $or; the bad second one is still reported.
    invalid({"$or": [{"a": {"$eq": 1}}, {"b": {"$near": 1}}]})


@pytest.mark.parametrize("condition,fragment", [
    ([], "must be an object"),
    ("a > 1", "must be an object"),
    ({}, "empty condition"),
    ({"$and": {"a": {"$eq": 1}}}, "must be an array of conditions"),
    ({"$and": [5]}, "condition.$and[0]: a condition must be an object"),
    ({"$or": [{}]}, "condition.$or[0]: an empty condition"),
    ({"a": 5}, "expected an object of operators"),
    ({"a": {}}, "expected an object of operators"),
    ({"a": {"eq": 1}}, "unknown operator 'eq'"),
    ({"$where": "x"}, "unknown operator '$where'"),
    ({"$gt": [1]}, "exactly two values"),
    ({"$gt": 5}, "exactly two values"),
    ({"a": {"$in": "abc"}}, "condition.a.$in: must be an array"),
    ({"a": {"$notIn": None}}, "must be an array"),
    ({"$in": [1, 2]}, "condition.$in[1]: must be an array"),
    ({"a": {"$exists": "yes"}}, "condition.a.$exists: must be true or false"),
    ({"a": {"$notExists": 1}}, "must be true or false"),
])
def test_malformed_conditions(condition, fragment):
    assert fragment in invalid(condition)


def test_literal_validator_skips_parts_holding_expressions():
    validate = literal_validator("condition")
    validate({"$and": "{{root.result.list}}"})
    validate({"a": {"$in": "{{root.result.list}}"}})
    validate({"a": {"$exists": "{{root.result.flag}}"}})
    validate({"a": "{{root.result.ops}}"})
    validate({"$gt": "{{root.result.pair}}"})
    with pytest.raises(ValidationError, match=r"condition\.a\.\$in: must be an array"):
        validate({"a": {"$in": "plain text"}})
    with pytest.raises(ValidationError, match="unknown operator"):
        validate({"{{root.result.x}}": {"$bogus": "{{root.result.y}}"}})


def test_literal_validator_names_its_field():
    with pytest.raises(ValidationError, match=r"^filter: an empty condition"):
        literal_validator("filter")({})


# -- a payload's Condition field: checked once as the payload loads ---------------------

class Holder(Schema):
    condition = conditions.Condition()


def loaded(condition):
    """``condition`` as a payload's ``Condition`` field loads it."""
    return Holder().load({"condition": condition})["condition"]


def test_a_well_formed_condition_loads_as_it_is():
    condition = {"$and": [{"{{root.result.x}}": {"$in": [1, 2]}}, {"$gt": ["{{@a}}", 1]}]}
    assert loaded(condition) is condition


def test_a_malformed_part_is_a_load_error_under_its_field():
    with pytest.raises(ValidationError) as caught:
        loaded({"$and": [{"a": {"$eq": 1}}, {"b": {"$in": 5}}]})
    assert caught.value.messages == {"condition": ["condition.$and[1].b.$in: must be an array."]}


@pytest.mark.parametrize("condition", [
    {"a": {"$in": "{{@tags}}"}},  # an item field stays text once resolved
    {"$and": ["{{x}}"]}, {"$and": "{{x}}"}, {"a": "{{abc"}, {"$foo": "{{x}}"},
    {"$gt": "{{x}}"}, {"$in": [1, "{{x}}"]}, {"a": {"$exists": "{{x}}"}},
])
def test_text_holding_braces_where_structure_belongs_is_reported_by_the_handler(condition):
    """At validation such a string is an expression; resolved, it is text: the load keeps
    the problem, and ``usable`` reports it as the full check does."""
    found = loaded(condition)
    assert isinstance(found, conditions.Malformed) and found == condition
    with pytest.raises(conditions.ConditionError) as expected:
        check(condition)
    with pytest.raises(NodeError) as caught:
        conditions.usable(found)
    assert (caught.value.code, caught.value.message) == ("INVALID_INPUT", str(expected.value))
    assert conditions.usable(condition) is condition  # not loaded by the field: trusted


def test_a_load_error_wins_over_text_before_it():
    with pytest.raises(ValidationError, match=r"condition\.\$and\[1\]: a condition must"):
        loaded({"$and": ["{{x}}", 5]})


def test_the_first_text_problem_is_the_one_kept():
    found = loaded({"$and": ["{{x}}", {"a": {"$in": "{{y}}"}}]})
    assert found.problem == "condition.$and[0]: a condition must be an object."


CONDITION_KEYS = st.sampled_from(["$and", "$or", "$in", "$eq", "$exists", "$gt", "$foo", "a",
                                  "{{k}}", "{{@k}}"])
CONDITION_LEAVES = st.sampled_from(["{{x}}", "{{@t}}", "{{abc", "x", "", 1, True, None, []])
CONDITION_SHAPES = st.recursive(
    CONDITION_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CONDITION_KEYS, inner, max_size=3),
    max_leaves=10)


@settings(max_examples=500, deadline=None)
@given(CONDITION_SHAPES)
def test_the_field_reports_what_literal_validator_then_check_report(condition):
    """The field's one walk answers as the two checks it replaces did: the validator's
    problem as a load error, else the full check's as the handler's INVALID_INPUT."""
    if not isinstance(condition, dict):  # refused as an object field refuses it
        with pytest.raises(ValidationError):
            loaded(condition)
        return
    try:
        literal_validator("condition")(condition)
    except ValidationError as error:
        with pytest.raises(ValidationError) as caught:
            loaded(condition)
        assert caught.value.messages["condition"] == error.messages
        return
    loaded_condition = loaded(condition)
    try:
        check(condition)
    except conditions.ConditionError as error:
        assert loaded_condition.problem == str(error)
    else:
        assert loaded_condition is condition


# -- cancellation and hashed membership ----------------------------------------

def _checks(allowed: int = 3):
    """A tick over a check that raises TIMEOUT after ``allowed`` calls, and the check."""
    context = counting_ctx(allowed)
    return ticks(context.check), context


@pytest.mark.parametrize("make", [
    lambda n: list(range(n)),
    lambda n: [[i] for i in range(n)],
    lambda n: {f"k{i}": i for i in range(n)},
    lambda n: [list(range(1000)) for _ in range(n // 1000)],  # many small lists
])
def test_deep_equal_of_large_values_checks_the_deadline(make):
    tick, context = _checks()
    with pytest.raises(NodeError) as caught:
        equal(make(20_000), make(20_000), tick)
    assert caught.value.code == "TIMEOUT"
    assert context.checks == 4


def test_long_in_and_contains_check_the_deadline():
    values = [[i] for i in range(20_000)]  # arrays: searched one by one
    for condition in ({"x": {"$in": values}}, {"x": {"$nin": values}},
                      {"$contains": [values, ["no"]]}):
        tick, _ = _checks()
        with pytest.raises(NodeError) as caught:
            evaluate(condition, lambda key: ["no"], tick=tick)
        assert caught.value.code == "TIMEOUT"


def test_a_large_condition_checks_the_deadline_as_it_is_checked_and_evaluated():
    parts = [{"x": {"$eq": i}} for i in range(20_000)]
    tick, _ = _checks()
    with pytest.raises(NodeError):
        check({"$or": parts}, tick=tick)
    tick, context = _checks()
    with pytest.raises(NodeError):
        conditions.holds({"$or": parts}, lambda key: -1, tick=tick)
    assert context.checks == 4


def test_small_values_do_not_reach_the_check():
    tick, context = _checks(allowed=0)
    assert evaluate({"$and": [{"x": {"$in": [1, 2, 3]}}, {"y": {"$eq": [1, {"a": 2}]}}]},
                    {"x": "2", "y": [1, {"a": 2}]}.get, tick=tick)
    assert context.checks == 0


def test_a_long_in_array_is_hashed_once_for_many_items():
    values = [str(i) for i in range(20_000)]
    lookups: dict = {}
    condition = {"x": {"$in": values}}
    assert conditions.holds(condition, lambda key: 19_999, lookups=lookups)
    assert conditions.holds(condition, lambda key: "5", lookups=lookups)
    assert not conditions.holds(condition, lambda key: "5.0", lookups=lookups)
    assert not conditions.holds({"x": {"$nin": values}}, lambda key: 5.0, lookups=lookups)
    assert list(lookups) == [id(values)]


@pytest.mark.parametrize("left,values,expected", [
    (1e21, ["1000000000000000000000"], True),
    ("1000000000000000000000", [1e21], True),
    ("1e21", ["1000000000000000000000"], False),  # two strings compare as strings
    ("1.0", ["1"], False),
    (1, ["1.0"], True),
    (True, [1, "true"], False),  # booleans are never numbers
    (1, [True], False),
    (None, [0, "", False], False),
    (None, [None], True),
    ([1], [[1.0]], True),  # arrays compare element by element
    ({"a": "2"}, [{"a": 2}], True),
    ("x", [["x"]], False),
])
def test_the_hashed_lookup_keeps_eq_semantics(left, values, expected):
    assert _in(left, values) is expected
    assert lookup(values)(left) is expected


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**25, 10**25),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1", "1.0", "01", "-0", "0", "0.0", "1e21", "1E21", "1e+21",
                     "1000000000000000000000", "10", "1e1", "abc", "", "true", "null"]),
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(SCALARS, st.lists(SCALARS, max_size=30))
def test_the_hashed_lookup_agrees_with_the_linear_search(left, values):
    assert lookup(values)(left) is _in(left, values)
