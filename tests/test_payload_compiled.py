"""``dialect.compile_load``: a payload's check worked out once gives what ``load`` gives.

For every node type, payloads as validation lets them through (their literal
values checked, tests/fuzz_strategies.py's payloads) resolved against values of
every shape: the same loaded data or the same ``ValidationError`` messages, and
so the same ``INVALID_INPUT`` message of a failed attempt.
"""
from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.dialect import _has_hooks, compile_load, errors_of, load, schema_of
from app.expressions import compile_payload, walk
from app.nodes import NODE_TYPES
from app.payload_checks import _literal_only
from tests.fuzz_strategies import NAMES, Scope, json_values, payload

IDS = ("root", "a", "b")
SCOPE = Scope(ancestors=IDS, ids=IDS, inputs=("price",), props=("label",), variables=("v",),
              kinds={"root": "manual", "a": "pluck", "b": "format"})
# What the paths read: anything, often a field of the kind a payload key wants.
VALUES = (json_values | st.lists(st.dictionaries(st.sampled_from(NAMES), json_values,
                                                 max_size=3), max_size=3)
          | st.sampled_from(["name", "a.b[0]", "a[", "GET", "{{@name}}", "uuid", 5, 10**6]))


def written_payload(data, node_type: str):
    """A payload as written for ``node_type`` (tests/fuzz_strategies.py's, and a loop's)."""
    if node_type != "for-each":
        return payload(data.draw, node_type, SCOPE)
    return data.draw(st.fixed_dictionaries({"array": st.lists(VALUES, max_size=3) | st.just(
        "{{a.result.values}}")}, optional={
        "concurrency": st.integers(1, 10) | st.just("{{$vars.v}}"),
        "onItemError": st.sampled_from(["stop", "continue", "{{$props.label}}"])}))


def outcome(call):
    try:
        return "ok", call()
    except ValidationError as error:
        return "invalid", error.messages


def resolved(data, written: dict) -> tuple[dict, frozenset[str]] | None:
    """``written`` resolved against drawn values, and its fixed keys; None when it holds a
    hole that does not parse (validation refuses it)."""
    world = data.draw(st.dictionaries(st.sampled_from([*IDS, "$props", "$inputs", "$vars",
                                                       "$trigger", "$run"]),
                                      st.dictionaries(st.sampled_from(
                                          ["result", "input", "payload", "body", "id"]),
                                          st.dictionaries(st.sampled_from(NAMES), VALUES,
                                                          max_size=4) | VALUES))
                      | st.just({}))
    resolver, fixed = compile_payload(written)
    try:
        return resolver(lambda path: walk(world, path.segments), None), fixed
    except ValueError:
        return None


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_same_answer_as_load_for_payloads_validation_accepts(node_type, data):
    schema_class = NODE_TYPES[node_type].payload
    written = written_payload(data, node_type)
    assume(isinstance(written, dict))
    assume(not _literal_only(errors_of(schema_class, written), written))  # else a 400
    found = resolved(data, written)
    assume(found is not None)
    values, fixed = found
    check = compile_load(schema_class, written, fixed)
    for _ in range(2):  # one compiled check serves every run
        assert outcome(lambda: check(values)) == outcome(lambda: load(schema_class, values))


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_same_answer_as_load_whatever_the_keys(node_type, data):
    """Keys that a schema's rules refuse, required keys absent, values of every type:
    fixed values are only those that pass their own field's checks."""
    schema_class = NODE_TYPES[node_type].payload
    names = [*sorted(schema_of(schema_class).load_fields), "unknown"]
    written = data.draw(st.dictionaries(st.sampled_from(names), VALUES | st.sampled_from(
        ["{{a.result.name}}", "{{a.result}}", "x {{b.input.values}}"]), max_size=len(names)))
    found = resolved(data, written)
    assume(found is not None)
    values, fixed = found
    errors = errors_of(schema_class, written)
    fixed = frozenset(key for key in fixed if key not in errors)
    check = compile_load(schema_class, written, fixed)
    assert outcome(lambda: check(values)) == outcome(lambda: load(schema_class, values))


def test_a_rule_on_keys_refused_after_resolution_fails_the_load_alike():
    # Validation drops the errors at "fields" (it holds an expression); its rule
    # "field or fields, not both" is the resolved payload's to break.
    written = {"array": [], "field": "a", "fields": "{{a.result}}"}
    schema_class = NODE_TYPES["pluck"].payload
    assert not _literal_only(errors_of(schema_class, written), written)
    check = compile_load(schema_class, written, frozenset({"array", "field"}))
    values = {"array": [], "field": "a", "fields": ["b"]}
    with pytest.raises(ValidationError) as compiled:
        check(values)
    assert compiled.value.messages == {"fields": ["Give 'field' or 'fields', not both."]}
    assert outcome(lambda: load(schema_class, values)) == ("invalid", compiled.value.messages)


def test_fixed_values_are_not_checked_again_the_others_are():
    checked = []
    schema_class = NODE_TYPES["format"].payload
    written = {"data": "{{a.result}}", "template": "{{@name}}"}
    check = compile_load(schema_class, written, frozenset({"template"}))
    field = schema_of(schema_class).load_fields["data"]
    real = field.validators
    field.validators = [lambda value: checked.append(value)]
    try:
        assert check({"data": [1], "template": "{{@name}}"}) == {
            "data": [1], "template": "{{@name}}", "separator": "\n"}
    finally:
        field.validators = real
    assert checked == []  # the steps were taken when compiled: the validator as it was
    with pytest.raises(ValidationError):
        check({"data": "text", "template": "{{@name}}"})


def test_every_hook_of_a_node_payload_is_a_presence_rule():
    """A hook that reads values would make every compiled check the whole schema's load:
    correct, but slow. Mark a new hook with ``presence_rule`` when it reads only keys."""
    for node_type in NODE_TYPES.values():
        schema_class = node_type.payload
        if not _has_hooks(schema_class):
            continue
        hooks = [getattr(schema_class, name) for name in dir(schema_class)
                 if hasattr(getattr(schema_class, name, None), "__marshmallow_hook__")]
        assert all(getattr(hook, "__presence_rule__", False) for hook in hooks), node_type
