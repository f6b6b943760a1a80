"""``dialect.load``: the quick load gives exactly what marshmallow's load gives.

For every node type's payload schema, both request bodies and the parts of a
definition, values that fit and values that do not: the same result, or the same
``ValidationError`` messages.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.dialect import _field_plan, errors_of, load, schema_of
from app.nodes import NODE_TYPES
from app.schemas import (
    DefinitionSchema,
    NodeSchema,
    RetrySchema,
    RunRequestSchema,
    ValidateRequestSchema,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["{{@name}}", "{{@}}", "a.b[0]", "a[", "", " ", "then", "GET", "ether"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)


def payloads(schema_class):
    names = [*sorted(schema_of(schema_class).load_fields), "unknown", "x"]
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


def outcome(call):
    try:
        return "ok", call()
    except ValidationError as error:
        return "invalid", error.messages


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_same_answer_as_marshmallow(node_type, data):
    schema_class = NODE_TYPES[node_type].payload
    payload = data.draw(payloads(schema_class) | json_values)
    assert outcome(lambda: load(schema_class, payload)) == \
        outcome(lambda: schema_of(schema_class).load(payload))


@pytest.mark.parametrize("schema_class", [RunRequestSchema, ValidateRequestSchema])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_request_bodies_same_answer_as_marshmallow(schema_class, data):
    """Unknown top-level keys are refused (RAISE): the quick way must refuse them too."""
    body = data.draw(payloads(schema_class))
    assert outcome(lambda: load(schema_class, body)) == \
        outcome(lambda: schema_of(schema_class).load(body))


@pytest.mark.parametrize("schema_class", [NodeSchema, DefinitionSchema, RetrySchema])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_definition_parts_same_answer_as_marshmallow(schema_class, data):
    """Validation loads every node of a definition this way, and the definition itself."""
    raw = data.draw(payloads(schema_class) | json_values)
    assert outcome(lambda: load(schema_class, raw)) == \
        outcome(lambda: schema_of(schema_class).load(raw))


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_errors_of_same_answer_as_validate(node_type, data):
    """What validation checks a payload's literal values with."""
    schema_class = NODE_TYPES[node_type].payload
    payload = data.draw(payloads(schema_class))
    assert errors_of(schema_class, payload) == schema_of(schema_class).validate(payload)


def test_plain_schemas_take_the_quick_way():
    """The common node types are loaded field by field (the point of ``load``)."""
    for node_type in ("log", "format", "if", "http-request", "delay", "code-transform"):
        assert _field_plan(NODE_TYPES[node_type].payload) is not None, node_type
    assert _field_plan(RunRequestSchema) is not None


def test_defaults_are_applied_and_unknown_keys_dropped():
    format_ = NODE_TYPES["format"].payload
    assert load(format_, {"data": [], "template": "x", "extra": 1}) == \
        {"data": [], "template": "x", "separator": "\n"}
