"""Which paths after a node id can lead somewhere (SPEC §4), known before the run.

In ``{{fetch.result.json.orders}}`` the node id is followed by a section of the
node's view — ``result``, ``input``, ``payload``, ``status`` or ``error``
(``state.VIEW_FIELDS``) — and a path into it. Anything else after the node id
reads nothing in every run (``{{fetch.json.orders}}``, ``.result`` forgotten),
and so does a path into a field that the section's shape cannot hold, where
that shape is known:

- ``result``: the node type's declared result schema (``NodeType.result``),
  followed as long as it is closed — an object listing its keys without
  ``additionalProperties``, an array (only an index follows it), a string,
  number or boolean (nothing follows it). A part declared free-form — no type
  (``json``, ``output``), an object without properties (``headers``), an object
  open to more keys (the root's result: the request's payload), an object or an
  array (``matches``) — is not looked into;
- ``status``: a string; ``error``: ``{code, message, retryable}`` or null;
- ``payload``: the node's payload as written in the definition, known exactly;
- ``input``: the resolved payload, whose values come from expressions: not
  looked into.

``problem`` says what is wrong with such a path, with a "did you mean"
suggestion (difflib) where a name is close.
"""
from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .expressions import Segment
from .nodes.base import NodeType, result_object
from .problems import closest
from .state import VIEW_FIELDS

STATUS = {"type": "string", "enum": ["pending", "running", "success", "failure", "skipped"]}
ERROR = {**result_object({"code": {"type": "string"}, "message": {"type": "string"},
                          "retryable": {"type": "boolean"}}), "type": ["object", "null"]}
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, eq=False)
class _Shape:
    """A closed part of a schema: an object with these fields, an array of these items,
    or a scalar (``kind`` names its JSON types). None stands for a free-form part."""

    kind: str
    fields: Mapping[str, _Shape | None] = field(default_factory=dict)
    items: _Shape | None = None


def _shape(schema: Mapping[str, Any]) -> _Shape | None:
    """``schema`` (JSON Schema, as node types declare results) as a ``_Shape``."""
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = ({kind} if isinstance(kind, str) else set(kind)) - {"null"}
    if kinds == {"object"}:
        fields = schema.get("properties")
        if not fields or schema.get("additionalProperties", True) is not False:
            return None
        return _Shape("object", {k: _shape(v) for k, v in fields.items()})
    if kinds == {"array"}:
        return _Shape("array", items=_shape(schema.get("items", {})))
    if len(kinds) > 1 and kinds & {"object", "array"}:
        return None
    return _Shape(" or ".join(sorted(kinds)) or "null")


@functools.cache
def _result_shape(node_type: NodeType) -> _Shape | None:
    return _shape(node_type.result)


_SECTIONS = {"status": _shape(STATUS), "error": _shape(ERROR), "input": None}


def problem(node_id: str, node: Mapping[str, Any], node_type: NodeType,
            rest: tuple[Segment, ...], may_hint: Callable[[], bool] = lambda: True
            ) -> str | None:
    """What is wrong with ``rest``, the path after the id of ``node`` (of ``node_type``),
    or None when it can lead somewhere. ``may_hint``: whether to look for the name a
    misspelt one meant (``Invalid.may_hint``: a payload can hold many such paths)."""
    if not rest:
        return None  # the whole view
    section, who = rest[0], (node_id, node_type, may_hint)
    if section == "result":
        shape = _result_shape(node_type)
    elif section == "payload":  # known exactly
        return _in_value(node.get("payload", {}), rest, who)
    elif section in _SECTIONS:
        shape = _SECTIONS[section]
    else:
        return _not_a_section(who, str(section), rest)
    return None if shape is None else _in_shape(shape, rest, who)


class _Where:
    """The part of a node a path reached (``steps``: the section and the segments
    after it), as a message names it."""

    def __init__(self, who: tuple[str, NodeType, Callable[[], bool]],
                 steps: tuple[Segment, ...]):
        self.node_id, self.type_name, self.may_hint = who[0], who[1].name, who[2]
        self.steps = steps

    def __str__(self) -> str:
        written = ", as written in the definition," if self.steps[0] == "payload" else ""
        dotted = ".".join(map(str, self.steps))
        return f"{_quoted(dotted)} of node {self.node_id!r} ({self.type_name}){written}"


def _not_a_section(who: tuple, section: str, rest: tuple[Segment, ...]) -> str:
    node_id, node_type, may_hint = who
    why = (f"{_quoted(section)} is not a part of node {node_id!r}: after a node id comes "
           f"{', '.join(VIEW_FIELDS[:-1])} or {VIEW_FIELDS[-1]}.")
    if not may_hint():
        return why
    close = closest(section, VIEW_FIELDS)
    if close:
        return f"{why} Did you mean {close!r}?"
    shape = _result_shape(node_type)
    if shape is None or section in shape.fields:  # the result may hold it
        return f"{why} Did you mean {_written(node_id, ('result', *rest))}?"
    return why


def _in_shape(shape: _Shape | None, rest: tuple[Segment, ...], who: tuple
              ) -> str | None:
    """Where ``rest[1:]`` leaves ``shape``, the shape of section ``rest[0]``."""
    for i in range(1, len(rest)):
        if shape is None:
            return None
        segment = rest[i]
        if shape.kind == "object":
            if str(segment) not in shape.fields:
                return _no_field(_Where(who, rest[:i]), segment, shape.fields.keys())
            shape = shape.fields[str(segment)]
        elif shape.kind == "array":
            if not isinstance(segment, int):
                return _not_an_index(_Where(who, rest[:i]), segment)
            shape = shape.items
        else:
            return _no_inside(_Where(who, rest[:i]), shape.kind, segment)
    return None


def _in_value(value: Any, rest: tuple[Segment, ...], who: tuple) -> str | None:
    """Where ``rest[1:]`` leaves ``value``, a payload as written."""
    for i in range(1, len(rest)):
        segment = rest[i]
        if isinstance(value, dict):
            if str(segment) not in value:
                return _no_field(_Where(who, rest[:i]), segment, value.keys())
            value = value[str(segment)]
        elif isinstance(value, list):
            if not isinstance(segment, int):
                return _not_an_index(_Where(who, rest[:i]), segment)
            if segment >= len(value):
                return (f"{_Where(who, rest[:i])} has {len(value)} items; there is no "
                        f"item {segment}.")
            value = value[segment]
        else:
            return _no_inside(_Where(who, rest[:i]), _json_type(value), segment)
    return None


def _no_field(where: _Where, segment: Segment, fields: Collection[str]) -> str:
    why = f"{where} has no field {_quoted(str(segment))}."
    if where.steps == ("payload",) and where.type_name == "manual":
        return (f"{why} The request's payload is read as "
                f"{_written(where.node_id, ('result', segment))} or "
                f"{_written('$trigger', ('body', segment))}.")
    hint = where.may_hint()
    close = closest(str(segment), fields) if hint else None
    if close:
        return f"{why} Did you mean {close!r}?"
    if not fields or not hint:
        return why
    listed = ", ".join(itertools.islice(fields, 20)) + (", …" if len(fields) > 20 else "")
    return f"{why} Its fields: {listed}."


def _not_an_index(where: _Where, segment: Segment) -> str:
    return (f"{where} is an array: only an index (0, 1, …) can follow it, "
            f"not {_quoted(str(segment))}.")


def _no_inside(where: _Where, kind: str, segment: Segment) -> str:
    what = "null" if kind == "null" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    return f"{where} is {what}: nothing is inside it ({_quoted(str(segment))})."


def _json_type(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _written(head: str, rest: tuple[Segment, ...]) -> str:
    """``{{head.rest}}`` as an expression, when every segment is a plain name."""
    segments = [head, *map(str, rest)]
    if all(_PLAIN.fullmatch(s) for s in segments[1:]):
        return "{{" + ".".join(segments) + "}}"
    return "{{" + f"{head}.{segments[1]}…" + "}}"


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "…"
