"""``format``: render ``template`` with ``{{@path}}`` item fields into one text.

An array renders the template once per item, joined by ``separator``
(an empty array gives ``""``); an object renders it once. Each
``{{@path}}`` is an item path (``values.parse_path``; ``{{@}}`` is the item
itself) written by SPEC §4's text rules: strings as is, numbers in shortest
form, objects and arrays as compact JSON, null or absent as ``""``. Run
expressions in the template were resolved before the node ran.
"""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ..dialect import Any_, Str
from ..expressions import MISSING, Segment, walk
from ..jstext import to_text
from ..textcache import cache_short_texts
from ..ticks import CHECK_EVERY
from .base import (
    MAX_TEXT_CHARS,
    SMALL_ARRAY,
    NodeContext,
    NodeError,
    NodeType,
    PayloadSchema,
    result_object,
)
from .values import ITEM_HOLE, parse_path

Part = str | tuple[Segment, ...]  # literal text, or the path of one {{@path}}


def _array_or_object(value: Any) -> None:
    if not isinstance(value, (list, dict)):
        raise ValidationError("Must be an array or an object.")


@cache_short_texts(maxsize=512)  # checked at validation, then run again and again
def compile_template(template: str) -> tuple[Part, ...]:
    """Split ``template`` into literal text and item paths; ``ValueError`` on a bad path."""
    parts: list[Part] = []
    pos = 0
    for hole in ITEM_HOLE.finditer(template):
        parts.append(template[pos:hole.start()])
        parts.append(parse_path(hole.group(1)))
        pos = hole.end()
    parts.append(template[pos:])
    return tuple(p for p in parts if p != "")


def _check_template(template: str) -> None:
    try:
        compile_template(template)
    except ValueError as error:
        raise ValidationError(str(error)) from None


class Payload(PayloadSchema):
    data = Any_(required=True, allow_none=False, validate=_array_or_object)
    template = Str(required=True, validate=_check_template)
    separator = Str(load_default="\n")


def inline(data: dict) -> bool:
    """Quick enough for the scheduling thread: few items and a short template."""
    items = len(data["data"]) if isinstance(data["data"], list) else 1
    return items * (len(data["template"]) + 64) <= SMALL_ARRAY * 100


def run(data: dict, ctx: NodeContext) -> dict:
    """``{formatted}``: the rendered text, at most ``MAX_TEXT_CHARS`` long.

    Each piece is counted before the next is written, so a template repeating
    a large value fails after about ``MAX_TEXT_CHARS`` of text, not after all of it.
    """
    steps = _steps(data["template"])  # checked by the schema: it compiles
    value, separator = data["data"], data["separator"]
    items = value if isinstance(value, list) else [value]
    pieces: list[str] = []
    length = 0
    check = ctx.check
    many = len(steps) >= CHECK_EVERY  # a template of many holes: checked within items too
    for index, item in enumerate(items):
        check()
        count = 0
        if index:
            length += len(separator)
            pieces.append(separator)
        for part, key in steps:
            if part.__class__ is not str:  # an item path: its value as text
                found = item.get(key, MISSING) if key is not None and \
                    item.__class__ is dict else walk(item, part)
                part = found if found.__class__ is str else f"{found}" if \
                    found.__class__ is int else to_text(None if found is MISSING else found,
                                                        check)
            length += len(part)
            if length > MAX_TEXT_CHARS:
                break
            pieces.append(part)
            if many:
                count += 1
                if not count % CHECK_EVERY:
                    check()
        if length > MAX_TEXT_CHARS:  # also when separators alone are too long
            raise NodeError("INVALID_INPUT",
                            f"The formatted text would exceed {MAX_TEXT_CHARS} characters.")
    return {"formatted": "".join(pieces)}


@cache_short_texts(maxsize=512)
def _steps(template: str) -> tuple[tuple[Part, str | None], ...]:
    """``compile_template(template)``, each part with the key it reads when it is an
    item path of one name (read from an object item without ``walk``)."""
    return tuple((part, part[0] if part.__class__ is tuple and len(part) == 1 and
                  part[0].__class__ is str else None)
                 for part in compile_template(template))


NODE = NodeType("format", Payload, run, inline_when=inline,
                result=result_object({"formatted": {"type": "string"}}))
