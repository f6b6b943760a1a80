"""``compile_payload``: a payload's resolution worked out once gives what ``resolve`` gives.

On payloads of every node type (tests/fuzz_strategies.py's, expressions over
ancestors, namespaces, fallbacks and garbage included) and on values of every
shape behind the paths: the same value, the same budget spent (in the same
number of steps, so the deadline is checked as often), the same error; new
containers every time, so no run can change what the next one resolves.
"""
from __future__ import annotations

import copy
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.expressions import Budget, ExpressionError, Path, compile_payload, resolve, walk
from tests.fuzz_strategies import NAMES, TYPES, Scope, json_values, payload

IDS = ("root", "a", "b", "c")
SCOPE = Scope(ancestors=IDS, ids=IDS, inputs=("price", "items"), props=("label", "list"),
              variables=("v",), kinds={"root": "manual", "a": "pluck", "b": "format",
                                       "c": "log"})


@st.composite
def worlds(draw) -> dict:
    """What the paths of ``SCOPE`` can read: each node's fields and every namespace."""
    fields = json_values | st.dictionaries(st.sampled_from(NAMES), json_values, max_size=4)
    world = {node: draw(st.fixed_dictionaries({}, optional={
        "result": fields, "input": fields, "payload": fields,
        "status": st.sampled_from(["success", "failure"]), "error": json_values}))
        for node in IDS}
    for namespace in ("$props", "$inputs", "$vars", "$trigger", "$run", "$workflow"):
        world[namespace] = draw(json_values)
    return world


def reader(world: dict):
    """A lookup over ``world`` that counts its calls."""
    calls = []

    def lookup(path: Path):
        calls.append(path)
        if path.head == "$nodes":
            return walk(world, path.rest)
        return walk(world, path.segments)
    return lookup, calls


def outcome(resolution, budget: Budget | None):
    try:
        value = ("ok", resolution())
    except ExpressionError as error:
        value = ("error", str(error))
    return value, (budget.left, budget._calls) if budget is not None else None


def counted_budget(limit: int | None) -> tuple[Budget | None, list]:
    """A budget (none when ``limit`` is None) and the deadline checks it makes."""
    checks: list = []
    return (None if limit is None else Budget(limit, lambda: checks.append(1))), checks


@settings(max_examples=400, deadline=None)
@given(data=st.data(), world=worlds(),
       limit=st.none() | st.integers(0, 300) | st.just(4 * 1024 * 1024))
def test_the_same_answer_as_resolve(data, world, limit):
    kind = data.draw(st.sampled_from(sorted(set(TYPES) | {"manual"})))
    written = payload(data.draw, kind, SCOPE)
    if not isinstance(written, dict):
        written = {"value": written}
    before = copy.deepcopy(written)
    resolver, fixed = compile_payload(written)
    plain_lookup, plain_calls = reader(world)
    plain_budget, plain_checks = counted_budget(limit)
    expected = outcome(lambda: resolve(written, plain_lookup, plain_budget), plain_budget)
    for _ in range(2):  # the compiled form serves every run: the second is like the first
        lookup, calls = reader(world)
        budget, checks = counted_budget(limit)
        assert outcome(functools.partial(resolver, lookup, budget), budget) == expected
        assert calls == plain_calls
        assert len(checks) == len(plain_checks)
    assert written == before
    assert all(key in fixed or _holds_hole(written[key]) for key in written)
    if expected[0][0] == "ok":
        assert all(expected[0][1][key] == written[key] for key in fixed)


def _holds_hole(value) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(map(_holds_hole, value.values()))
    if isinstance(value, list):
        return any(map(_holds_hole, value))
    return False


@settings(max_examples=200, deadline=None)
@given(written=st.dictionaries(st.text(max_size=3), json_values, max_size=4), world=worlds())
def test_every_resolution_has_containers_of_its_own(written, world):
    """A handler given the resolved payload cannot change the plan's, nor the next run's."""
    before = copy.deepcopy(written)
    resolver, _ = compile_payload(written)
    lookup, _ = reader(world)
    first = resolver(lookup, None)
    assert first == written
    _scramble(first)
    assert written == before
    assert resolver(lookup, None) == before


def _scramble(value) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _scramble(item)
        value["scrambled"] = True
    elif isinstance(value, list):
        for item in value:
            _scramble(item)
        value.append("scrambled")


def test_a_lone_hole_keeps_the_value_it_reads():
    big = {"rows": list(range(10))}
    resolver, fixed = compile_payload({"data": "{{a.result}}", "n": 3, "t": "x {{a.result}}"})
    lookup, _ = reader({"a": {"result": big}})
    resolved = resolver(lookup, Budget(1000))
    assert resolved["data"] is big  # shared, as resolve shares it
    assert resolved["t"] == 'x {"rows":[0,1,2,3,4,5,6,7,8,9]}'
    assert fixed == {"n"}


def test_item_holes_are_text_and_spend_the_budget():
    resolver, fixed = compile_payload({"template": "{{@name}}={{@qty}}"})
    budget = Budget(100)
    assert resolver(reader({})[0], budget) == {"template": "{{@name}}={{@qty}}"}
    assert budget.left == 100 - len("{{@name}}={{@qty}}")
    assert fixed == {"template"}


def test_a_missing_path_is_null_alone_and_empty_in_text():
    resolver, _ = compile_payload({"a": "{{x.result.y}}", "b": "<{{x.result.y}}>",
                                   "c": "{{x.result.y || [1]}}"})
    lookup, _ = reader({})
    first = resolver(lookup, None)
    assert first == {"a": None, "b": "<>", "c": [1]}
    first["c"].append(2)  # an array literal is a new list in every resolution
    assert resolver(lookup, None)["c"] == [1]


def test_a_hole_that_does_not_parse_fails_as_resolve_fails():
    written = {"bad": "{{a..b}}"}
    resolver, fixed = compile_payload(written)
    with pytest.raises(ExpressionError) as plain:
        resolve(written, reader({})[0])
    with pytest.raises(ExpressionError) as compiled:
        resolver(reader({})[0], None)
    assert str(compiled.value) == str(plain.value)
    assert fixed == frozenset()


def test_a_container_written_into_text_is_paid_for_before_it_is_written():
    # Its JSON (41 characters) is over what is left; its text ([2,2,…], 21) is not.
    resolver, _ = compile_payload({"t": "x{{a}}"})
    lookup, _ = reader({"a": [2.0] * 10})
    budget = Budget(30)
    with pytest.raises(ExpressionError):
        resolver(lookup, budget)
    assert budget.left == 30 - 1 - 41


def test_the_budget_stops_a_compiled_resolution_alike():
    big = {"rows": ["x" * 1000] * 100}
    written = {f"k{i}": "{{a}}" for i in range(100)}
    resolver, _ = compile_payload(written)
    lookup, _ = reader({"a": big})
    with pytest.raises(ExpressionError, match="exceed 1000000"):
        resolver(lookup, Budget(1_000_000))
