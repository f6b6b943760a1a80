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

A node's payload is loaded before every attempt of every run, its keys always
the same and most of its values as written: ``compile_load`` works out once per
payload what ``load`` would do with its keys (defaults, the schema's rules on
which keys are present, the checks its literal values passed at validation)
and leaves only the values that hold expressions to check on each load.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping
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
            value = _loaded(data[key], key, data, as_is, items_as_is, validators, field_)
            if value is not missing:
                out[name] = value
    except ValidationError:
        return schema_of(schema_class).load(data)  # raises, naming every problem
    return out


def _loaded(value: Any, key: str, data: Any, as_is: frozenset, items_as_is: frozenset,
            validators: tuple, field_: fields.Field) -> Any:
    """One field's value loaded as its field loads it (``missing``: left out); a value of
    a type the field keeps as it is, or a list of such items, only validated."""
    if type(value) in as_is:
        for validator in validators:
            validator(value)
        return value
    if items_as_is and type(value) is list and all(
            type(item) in items_as_is for item in value):
        value = list(value)  # the field gives a new list
        for validator in validators:
            validator(value)
        return value
    return field_.deserialize(value, key, data)


def compile_load(schema_class: type[Schema], payload: Mapping[str, Any],
                 fixed: Collection[str]) -> Callable[[Any], Any]:
    """``load(schema_class, ·)`` for ``payload`` resolved, worked out once: a function of
    the resolved payload (its keys are ``payload``'s; under the keys in ``fixed`` its
    values equal the payload's, which passed their checks at validation) that gives
    what ``load`` gives, the same errors included.

    A value that holds expressions is loaded as ``load`` loads it; a fixed one of a
    type its field keeps as it is is taken as it is; a key that is absent gets its
    default. A schema's hooks must all be ``presence_rule``s, judged here on the
    payload's keys: when one refuses them, or a required key is absent, every load is
    ``load``'s, which reports every problem.
    """
    steps, schema = _steps(schema_class), schema_of(schema_class)
    if steps is None or not isinstance(payload, dict) or not _keys_pass(schema_class,
                                                                        payload) or (
            schema.unknown == RAISE and not {key for key, *_ in steps}.issuperset(payload)):
        return functools.partial(load, schema_class)
    compiled: list[_Step] = []
    for key, name, as_is, items_as_is, validators, absent, field_ in steps:
        if key not in payload:
            if absent is _missing_required:
                return functools.partial(load, schema_class)
            if absent is not None:
                compiled.append((key, name, _NONE, _NONE, (), absent, field_))
            continue
        if key in fixed and type(payload[key]) in as_is:
            validators = ()  # the value as written passed them at validation
        compiled.append((key, name, as_is, items_as_is, validators, None, field_))
    plan = tuple(compiled)

    def load_payload(data: Any) -> Any:
        out = {}
        try:
            for key, name, as_is, items_as_is, validators, absent, field_ in plan:
                if absent is not None:
                    out[name] = absent()
                    continue
                value = data[key]
                if not validators and type(value) in as_is:  # a fixed value, as a rule
                    out[name] = value
                    continue
                value = _loaded(value, key, data, as_is, items_as_is, validators, field_)
                if value is not missing:
                    out[name] = value
        except ValidationError:
            return schema.load(data)  # raises, naming every problem
        return out
    return load_payload


def presence_rule(hook: Callable) -> Callable:
    """Mark a schema validator (``validates_schema(pass_original=True)``) that reads only
    which keys the original data holds: ``compile_load`` judges it once per payload."""
    hook.__presence_rule__ = True
    return hook


def _keys_pass(schema_class: type[Schema], payload: dict) -> bool:
    """Whether the schema's hooks, all presence rules, accept the keys of ``payload``
    (False when one refuses them or a hook is not a presence rule)."""
    schema = schema_of(schema_class)
    keys = dict.fromkeys(payload)
    for name in dir(schema_class):
        hook = getattr(schema_class, name, None)
        if not hasattr(hook, "__marshmallow_hook__"):
            continue
        if not getattr(hook, "__presence_rule__", False):
            return False
        try:
            getattr(schema, name)({}, keys, partial=None, many=False, unknown=schema.unknown)
        except ValidationError:
            return False
    return True


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
    steps = _steps(schema_class)
    if steps is None or _has_hooks(schema_class):
        return None
    known = frozenset(key for key, *_ in steps) if schema_of(schema_class).unknown == RAISE \
        else None
    return steps, known


@functools.cache
def _steps(schema_class: type[Schema]) -> tuple[_Step, ...] | None:
    """How each field is loaded, hooks aside (see ``_field_plan``); None for a schema that
    keeps unknown keys, loads many, partially, into another dict class, or into dotted
    attributes."""
    schema = schema_of(schema_class)
    if schema.unknown == INCLUDE or schema.many or schema.partial or \
            schema.dict_class is not dict:
        return None
    steps = tuple(_step(name, field_) for name, field_ in schema.load_fields.items())
    if any("." in name for _, name, *_ in steps):
        return None
    return steps


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
