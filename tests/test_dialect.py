"""``app.dialect``: which schemas take the quick load, what it keeps of marshmallow's
answers (order, copies, ``validate``), and errors as flat locations.

That the quick load gives marshmallow's answers for every payload and request
schema is tests/test_payload_load.py.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from marshmallow import (
    INCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from app.dialect import (
    Any_,
    Int,
    Obj,
    Str,
    _field_plan,
    errors_of,
    flatten,
    iter_flat,
    load,
    location_key,
    schema_of,
)
from app.schemas import DefinitionSchema, NodeSchema, RetrySchema
from tests.server import ROOT


def outcome(schema_class, data):
    try:
        loaded = load(schema_class, data)
    except ValidationError as error:
        return "invalid", error.messages, error.valid_data
    return "ok", loaded, list(loaded)


def marshmallow_outcome(schema_class, data):
    try:
        loaded = schema_of(schema_class).load(data)
    except ValidationError as error:
        return "invalid", error.messages, error.valid_data
    return "ok", loaded, list(loaded)


# -- which schemas take the quick load ------------------------------------------

class Plain(Schema):
    name = Str(required=True)
    count = Int(load_default=1, validate=validate.Range(0, 10))
    tags = fields.List(Str(), load_default=list)
    extra = Any_()


class WithSchemaValidator(Plain):
    @validates_schema
    def whole(self, data, **kwargs):
        pass


class WithFieldValidator(Plain):
    @validates("name")
    def named(self, value, **kwargs):
        pass


class WithPreLoad(Plain):
    @pre_load
    def before(self, data, **kwargs):
        return data


class WithPostLoad(Plain):
    @post_load
    def after(self, data, **kwargs):
        raise ValidationError("post_load ran")


class KeepsUnknown(Plain):
    class Meta:
        unknown = INCLUDE


class RefusesUnknown(Plain):
    class Meta:
        unknown = RAISE


class Dotted(Schema):
    value = Str(attribute="a.b")


@pytest.mark.parametrize("schema_class", [
    WithSchemaValidator, WithFieldValidator, WithPreLoad, WithPostLoad, KeepsUnknown, Dotted])
def test_schemas_that_need_marshmallow_take_its_load(schema_class):
    assert _field_plan(schema_class) is None
    for data in ({"name": "a"}, {"name": 5}, {"value": "v"}, []):
        assert outcome(schema_class, data) == marshmallow_outcome(schema_class, data)


@pytest.mark.parametrize("schema_class", [Plain, RefusesUnknown, NodeSchema, DefinitionSchema,
                                          RetrySchema])
def test_plain_schemas_take_the_quick_load(schema_class):
    assert _field_plan(schema_class) is not None


# -- what the quick load keeps of marshmallow's answers ---------------------------

@pytest.mark.parametrize("data", [
    {"name": "a"}, {"extra": None, "tags": ["x"], "count": 3, "name": "a"},
    {"name": "a", "count": 11}, {"name": "a", "count": 2.0}, {"name": "a", "count": True},
    {"name": "a", "tags": ["x", 1]}, {"name": "a", "tags": "x"}, {"count": 1},
    {"name": "a", "unknown": 1}, {"name": None}, {"name": "a", "extra": {"b": [1]}}, [], None,
])
@pytest.mark.parametrize("schema_class", [Plain, RefusesUnknown])
def test_same_answer_order_and_valid_data_as_marshmallow(schema_class, data):
    assert outcome(schema_class, data) == marshmallow_outcome(schema_class, data)


@pytest.mark.parametrize("raw", [
    {"type": "log"}, {"type": "log", "payload": {"m": 1}, "children": ["a"], "title": "t"},
    {"type": "x", "children": []}, {"type": "log", "branch": "then"},
    {"type": "log", "branch": "maybe"}, {"type": 5}, {"type": "log", "children": [1]},
    {"type": "log", "payload": None}, {"type": "log", "timeoutMs": 5.0},
    {"type": "log", "retry": {"maxAttempts": 2, "retryOn": ["TIMEOUT"]}},
    {"type": "log", "retry": {"maxAttempts": 11}}, {"type": "log", "continueOnError": "yes"},
    [], None,
])
def test_nodes_load_as_the_schema_loads_them(raw):
    """Validation loads every node of a definition (tens of thousands) this way."""
    assert outcome(NodeSchema, raw) == marshmallow_outcome(NodeSchema, raw)


def test_lists_are_copied_and_objects_kept_as_marshmallow_does():
    raw = {"type": "log", "payload": {"message": "m"}, "children": ["a"]}
    for node in (load(NodeSchema, raw), schema_of(NodeSchema).load(raw)):
        assert node["children"] == ["a"] and node["children"] is not raw["children"]
        assert node["payload"] is raw["payload"]


def test_defaults_are_new_each_time():
    first, second = load(NodeSchema, {"type": "log"}), load(NodeSchema, {"type": "log"})
    assert first["payload"] == {} and first["payload"] is not second["payload"]


def test_errors_of_is_what_validate_returns():
    for schema_class in (Plain, WithSchemaValidator, WithPostLoad, NodeSchema):
        for data in ({"name": "a"}, {"name": 5, "count": -1}, {"type": "log"}, {"type": 5}, []):
            assert errors_of(schema_class, data) == schema_of(schema_class).validate(data)
    assert errors_of(WithPostLoad, {"name": "a"}) == {}  # validate() runs no post_load


def test_a_value_of_another_type_goes_through_its_field():
    class Loose(Schema):
        value = Obj()

    class Mapping(dict):
        pass

    value = Mapping(a=1)
    assert load(Loose, {"value": value})["value"] is value


# -- errors as flat locations ---------------------------------------------------------

def test_flatten_nested_messages():
    errors = {"definition": {"nodes": {"a": {"children": {1: ["Not a valid string."]}}},
                             "_schema": ["Bad."]},
              "runId": ["Must match.", "Again."]}
    assert flatten(errors) == {"definition.nodes.a.children[1]": ["Not a valid string."],
                               "definition": ["Bad."], "runId": ["Must match.", "Again."]}
    assert list(iter_flat({"b": ["x"]}, "payload")) == [("payload.b", "x")]


def test_long_keys_are_cut_in_locations():
    assert location_key("k" * 100) == "k" * 100
    assert location_key("k" * 101) == "k" * 99 + "…"
    assert flatten({"k" * 500: ["x"]}) == {"k" * 99 + "…": ["x"]}


def test_the_dialect_imports_nothing_of_the_app():
    # (the package itself holds the version: app/version.py, a constant)
    code = ("import sys, app.dialect\n"
            "ours = sorted(m for m in sys.modules if m.startswith('app.')\n"
            "              and m not in ('app.dialect', 'app.version'))\n"
            "assert not ours, ours\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
