"""What every node type shares: its declaration, its error value, its run context,
strict JSON fields.

A node type is a ``NodeType`` record, declared once at the end of its module
(``NODE = NodeType(...)``) and registered in ``app.nodes.NODE_TYPES``:

- ``name``: the ``type`` of a definition's node;
- ``payload``: a ``PayloadSchema`` subclass describing the payload (checked on
  literal values at validation and on resolved values before each attempt);
- ``run(data, ctx) -> dict``: the handler; ``data`` is the loaded payload
  (defaults applied, unknown keys dropped); it returns the node's result or
  raises ``NodeError``;
- ``result``: the JSON Schema of that result (listed by ``GET /v1/node-types``);
- ``inline``: True for pure, quick handlers that may run on the scheduling
  thread, or ``inline_when(data) -> bool`` for handlers that are quick on small
  inputs only;
- ``max_timeout_ms`` (default 60000), ``timeout_field`` (a payload key, in ms,
  that also limits the attempt) and ``condition_fields`` (payload keys holding
  a condition whose object keys are expressions too).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields, missing

DEFAULT_MAX_TIMEOUT_MS = 60_000
# Up to this many items, a handler that walks an array once is quick enough (well
# under a millisecond) to run on the scheduling thread and save a thread hand-off.
SMALL_ARRAY = 1000
# Text a handler builds (format) may be at most this long.
MAX_TEXT_CHARS = 4 * 1024 * 1024


def small_array(data: dict) -> bool:
    """``inline`` for handlers that walk ``data["array"]`` once."""
    array = data.get("array")
    return isinstance(array, list) and len(array) <= SMALL_ARRAY


@dataclass(frozen=True, eq=False)  # one record per type: compared by identity
class NodeType:
    """A node type as the registry, validation and the engine know it."""

    name: str
    payload: type[Schema]
    run: Callable[[dict, NodeContext], dict]
    result: Mapping[str, Any]  # JSON Schema of what ``run`` returns
    inline: bool = False  # always runs on the scheduling thread
    inline_when: Callable[[dict], bool] | None = None  # …or when this says so
    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS
    timeout_field: str | None = None
    condition_fields: tuple[str, ...] = ()

    def runs_inline(self, data: dict) -> bool:
        """Whether an attempt on ``data`` runs on the scheduling thread."""
        return self.inline or (self.inline_when is not None and self.inline_when(data))


def result_object(properties: Mapping[str, Any], *, more: bool = False) -> dict:
    """The JSON Schema of a result object with all of ``properties`` (and other keys
    only when ``more``)."""
    return {"type": "object", "required": list(properties), "properties": dict(properties),
            "additionalProperties": more}


class NodeError(Exception):
    """A node's failure as a value: ``{code, message, retryable}``."""

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class Cancel(threading.Event):
    """An attempt's cancel flag that remembers when it was set (the pool's watchdog
    looks for threads still busy long after their attempt was given up)."""

    set_at: float | None = None

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


@dataclass
class NodeContext:
    """What a handler may use besides its payload; never Flask's globals."""

    run_id: str
    node_id: str
    deadline: float  # time.monotonic() by which this attempt must end
    cancelled: threading.Event = field(default_factory=threading.Event)
    settings: Mapping[str, Any] = field(default_factory=dict)
    resolve: Callable[[str], Any] = lambda text: text
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("app.nodes"))

    def time_left(self) -> float:
        """Seconds until this attempt must end (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise ``TIMEOUT`` once the attempt is cancelled or past its limit.

        Loops over data whose size the request controls call this at least
        every few milliseconds of work (every ~1000 cheap items), so no handler,
        inline or pooled, runs on after its attempt has ended (SPEC §3).
        """
        if self.cancelled.is_set() or time.monotonic() >= self.deadline:
            raise NodeError("TIMEOUT", "The attempt exceeded its time limit.", retryable=True)


class PayloadSchema(Schema):
    """Unknown payload keys are accepted and ignored (SPEC §1)."""

    class Meta:
        unknown = EXCLUDE


@functools.cache
def schema_of(payload_class: type[Schema]) -> Schema:
    """One shared instance per payload schema: building one costs more than a load."""
    return payload_class()


def load(schema_class: type[Schema], data: Any) -> Any:
    """``schema_of(schema_class).load(data)``, in a quarter of the time.

    A load runs before every attempt of every node, and most of its cost is
    marshmallow's general machinery (error store, partial loading, hooks). For
    a schema with plain fields only, the same fields deserialize one by one
    here; anything else, and any invalid value, goes through the schema's own
    load, which reports every problem. tests/test_payload_load.py holds both
    ways to the same answers.
    """
    plan = _field_plan(schema_class)
    if plan is None or not isinstance(data, dict):
        return schema_of(schema_class).load(data)
    fields_, known = plan
    if known is not None and not known.issuperset(data):  # unknown = RAISE
        return schema_of(schema_class).load(data)  # raises, naming every problem
    out = {}
    try:
        for key, name, field_ in fields_:
            value = field_.deserialize(data.get(key, missing), key, data)
            if value is not missing:
                out[name] = value
    except ValidationError:
        return schema_of(schema_class).load(data)  # raises, naming every problem
    return out


@functools.cache
def _field_plan(schema_class: type[Schema]) -> tuple | None:
    """``(key in the data, key in the result, field)`` per field, and the keys allowed
    when unknown keys are refused (else None); None for a schema that needs the whole of
    marshmallow (hooks, field validators, dotted attributes, unknown keys kept)."""
    schema = schema_of(schema_class)
    if any(schema._hooks.values()) or schema.opts.unknown == INCLUDE:
        return None
    fields_ = tuple((field_.data_key or name, field_.attribute or name, field_)
                    for name, field_ in schema.load_fields.items())
    if any("." in name for _, name, _ in fields_):
        return None
    known = frozenset(key for key, _, _ in fields_) if schema.opts.unknown == RAISE else None
    return fields_, known


# Strict JSON fields: marshmallow's own accept "5" for an Integer and
# "yes" for a Boolean; a workflow payload must carry the JSON type itself.

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


def iso_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return iso(time.time())


def iso(epoch_seconds: float) -> str:
    """``epoch_seconds`` as ISO 8601 UTC with milliseconds and ``Z``."""
    whole = int(epoch_seconds)
    millis = int((epoch_seconds - whole) * 1000)
    return _iso_seconds(whole) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _iso_seconds(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
