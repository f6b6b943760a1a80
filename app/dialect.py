"""Our marshmallow dialect: strict JSON fields, one loader, and errors as flat locations.

Every request shape and node payload is a marshmallow schema written with the
fields below, and everything in the app loads one the same way:
``load(schema_class, data)`` (or ``errors_of`` for the messages alone), with
one shared instance per schema (``schema_of``). A failed load raises
marshmallow's ``ValidationError``, whose nested messages ``flatten`` and
``iter_flat`` turn into ``{"a.b[1].c": [messages]}`` locations.

``load`` gives exactly what ``Schema.load`` gives (tests/test_payload_load.py
holds it to that), quicker: most of marshmallow's cost is general machinery
(an error store, partial loading, hooks) that a schema of plain fields never
uses, and a request can hold tens of thousands of nodes, each loaded at
validation and again before every attempt.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, missing

# A key longer than this is cut in an error's location, so that no location (and no
# error body) grows with the length of a hostile key.
LOCATION_KEY_CHARS = 100


# -- strict JSON fields ---------------------------------------------------------
# marshmallow's own accept "5" for an Integer and "yes" for a Boolean; a workflow
# payload must carry the JSON type itself.

class Str(fields.String):
    pass


class Bool(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class Int(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return value


class Num(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        return value


class Obj(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError("Not a valid object.")
        return value


class Arr(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("Not a valid array.")
        return value


class Any_(fields.Raw):
    """Any JSON value, null included."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_none", True)
        super().__init__(**kwargs)


# The values each field class above deserializes to themselves, by exact type: a value
# of one of these types needs no call into the field (its validators still run).
_AS_IS: dict[type[fields.Field], frozenset[type]] = {
    Str: frozenset((str,)), Bool: frozenset((bool,)), Int: frozenset((int,)),
    Num: frozenset((int, float)), Obj: frozenset((dict,)), Arr: frozenset((list,)),
    Any_: frozenset((str, int, float, bool, dict, list)),
}
_NONE: frozenset[type] = frozenset()


# -- loading ----------------------------------------------------------------------

@functools.cache
def schema_of(schema_class: type[Schema]) -> Schema:
    """One shared instance per schema: building one costs more than a load."""
    return schema_class()


def load(schema_class: type[Schema], data: Any) -> Any:
    """``schema_of(schema_class).load(data)``, in a fraction of the time.

    For a schema without hooks (see ``_field_plan``), each field is loaded here
    in turn: a value of a JSON type its field keeps as it is (``_AS_IS``) is
    taken after the field's validators, any other goes through the field
    itself. Anything invalid goes through the schema's own load, which reports
    every problem.
    """
    plan = _field_plan(schema_class)
    if plan is None or not isinstance(data, dict):
        return schema_of(schema_class).load(data)
    steps, known = plan
    if known is not None and not known.issuperset(data):  # unknown = RAISE
        return schema_of(schema_class).load(data)  # raises, naming every problem
    out = {}
    try:
        for key, name, as_is, items_as_is, validators, absent, field_ in steps:
            if key not in data:
                if absent is not None:
                    out[name] = absent()
                continue
            value = data[key]
            if type(value) in as_is:
                for validator in validators:
                    validator(value)
            elif items_as_is and type(value) is list and all(
                    type(item) in items_as_is for item in value):
                value = list(value)  # the field gives a new list
                for validator in validators:
                    validator(value)
            else:
                value = field_.deserialize(value, key, data)
                if value is missing:
                    continue
            out[name] = value
    except ValidationError:
        return schema_of(schema_class).load(data)  # raises, naming every problem
    return out


def errors_of(schema_class: type[Schema], data: Any) -> dict:
    """What ``schema_of(schema_class).validate(data)`` returns: the error messages,
    ``{}`` when ``data`` is valid."""
    if _field_plan(schema_class) is None:  # validate() skips post_load hooks, load() does not
        return schema_of(schema_class).validate(data)
    try:
        load(schema_class, data)
    except ValidationError as error:
        return error.messages
    return {}


# How ``load`` reads one field: its key in the data and in the result, the types of the
# values the field keeps as they are (of a List field: of every item, in a new list),
# its validators, what an absent key gives (see ``_absent``), and the field itself.
_Step = tuple[str, str, frozenset[type], frozenset[type], tuple, Callable[[], Any] | None,
              fields.Field]


@functools.cache
def _field_plan(schema_class: type[Schema]) -> tuple[tuple[_Step, ...], frozenset | None] | None:
    """The steps of ``load``, and the keys allowed when unknown keys are refused (else
    None); None for a schema that needs the whole of marshmallow.

    That is a schema with hooks (``validates_schema``, ``validates``, ``pre_load``,
    ``post_load``), found by the ``__marshmallow_hook__`` mark that marshmallow's
    decorators put on the methods they decorate (the mark marshmallow itself
    collects them by); or one that keeps unknown keys, loads many, partially,
    into another dict class, or into dotted attributes.
    """
    schema = schema_of(schema_class)
    if _has_hooks(schema_class) or schema.unknown == INCLUDE or schema.many or \
            schema.partial or schema.dict_class is not dict:
        return None
    steps = tuple(_step(name, field_) for name, field_ in schema.load_fields.items())
    if any("." in name for _, name, *_ in steps):
        return None
    known = frozenset(key for key, *_ in steps) if schema.unknown == RAISE else None
    return steps, known


def _has_hooks(schema_class: type[Schema]) -> bool:
    return any(hasattr(getattr(schema_class, name, None), "__marshmallow_hook__")
               for name in dir(schema_class))


def _step(name: str, field_: fields.Field) -> _Step:
    plain = not (field_.pre_load or field_.post_load)
    inner = field_.inner if type(field_) is fields.List else None
    plain_items = plain and inner is not None and not (
        inner.validators or inner.pre_load or inner.post_load)
    return (field_.data_key or name, field_.attribute or name,
            _AS_IS.get(type(field_), _NONE) if plain else _NONE,
            _AS_IS.get(type(inner), _NONE) if plain_items else _NONE,
            tuple(field_.validators), _absent(field_), field_)


def _absent(field_: fields.Field) -> Callable[[], Any] | None:
    """What an absent key gives: None when the field is left out; else a function that
    returns its ``load_default`` or, for a required field, raises."""
    default = field_.load_default
    if default is not missing:
        return default if callable(default) else lambda: default
    return _missing_required if field_.required else None


def _missing_required() -> Any:
    raise ValidationError("")  # load() then lets the schema report it, with the rest


# -- errors as flat locations ----------------------------------------------------------

def flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict → ``{"a.b[1].c": [messages]}``."""
    flat: dict[str, list[str]] = {}
    for path, message in iter_flat(errors, prefix):
        flat.setdefault(path, []).append(message)
    return flat


def iter_flat(errors: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(location, message)`` of each message of a nested error dict, lazily: a
    consumer that has enough stops before the rest of the locations are built."""
    stack: list[tuple[str, Any]] = [(prefix, errors)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list) and all(isinstance(e, str) for e in value):
            yield from ((path, message) for message in value)
        elif not isinstance(value, dict):
            yield path, str(value)
        else:
            stack.extend((_sub(path, key), sub) for key, sub in reversed(value.items()))


def _sub(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if key == "_schema":
        return prefix
    return f"{prefix}.{location_key(key)}" if prefix else location_key(key)


def location_key(key: Any) -> str:
    """A key as written in an error location; a very long one cut (marked ``…``)."""
    key = str(key)
    return key if len(key) <= LOCATION_KEY_CHARS else key[:LOCATION_KEY_CHARS - 1] + "…"
