"""``pluck``: read one field (or several) from every item of ``array``.

``field`` gives a list of values; ``fields`` with one path gives the same,
with several an object per item keyed by each path as written. A value that
is absent (or an item that is not an object) gives null. Paths are item paths
(``values.parse_path``); an empty path is the item itself.
"""
from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from .. import config
from ..dialect import Arr, Str, presence_rule
from ..expressions import MISSING, walk
from ..jstext import json_length
from ..ticks import CHECK_EVERY
from .base import SMALL_ARRAY, NodeContext, NodeError, NodeType, PayloadSchema, result_object
from .values import at_path, check_path, parse_path, present

MAX_VALUES = 1_000_000  # items × fields: beyond it the result is refused, not built
_EMPTY_CHARS = len('{"values":[]}')


class Payload(PayloadSchema):
    array = Arr(required=True)
    field = Str(validate=check_path)
    fields = fields.List(Str(validate=check_path), validate=validate.Length(min=1))

    @presence_rule
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def one_of_field_or_fields(self, data: dict, original: dict, **kwargs) -> None:
        # The raw keys: a present but ill-typed value is reported by its own field.
        if not isinstance(original, dict):
            return  # not an object: reported as such
        if "field" in original and "fields" in original:
            raise ValidationError("Give 'field' or 'fields', not both.", "fields")
        if "field" not in original and "fields" not in original:
            raise ValidationError("Missing data for required field (or give 'fields').",
                                  "field")


def _names(data: dict) -> list[str]:
    return [data["field"]] if "field" in data else data["fields"]


def inline(data: dict) -> bool:
    """Quick enough for the scheduling thread when items × fields is small."""
    return len(data["array"]) * len(_names(data)) <= SMALL_ARRAY


def run(data: dict, ctx: NodeContext) -> dict:
    """``{values}``: one value (or object of values) per item, null where missing.

    The result's JSON text is counted as it is built: past the result cap (SPEC
    §3) the node fails with ``OUTPUT_TOO_LARGE`` without building the rest.
    """
    names, array = _names(data), data["array"]
    if len(array) * len(names) > MAX_VALUES:
        raise NodeError("INVALID_INPUT", f"{len(array)} items × {len(names)} fields "
                        f"is more than {MAX_VALUES} values.")
    settings = ctx.settings
    limit = settings["MAX_RESULT_CHARS"] if "MAX_RESULT_CHARS" in settings else \
        config.default("MAX_RESULT_CHARS")
    length = _EMPTY_CHARS
    values: list = []
    if len(names) == 1:
        # Each value is a different part of the input, whose text the engine bounds
        # at half the result cap: only what pluck adds (nulls) can grow, so neither
        # containers nor long strings need measuring here.
        path = parse_path(names[0])
        key = path[0] if len(path) == 1 and path[0].__class__ is str else None
        for index, item in enumerate(array):
            if not index % CHECK_EVERY:
                ctx.check()
            # a one-name path on an object item read at once (what walk does)
            value = item.get(key, MISSING) if key is not None and item.__class__ is dict \
                else walk(item, path)
            if value is MISSING:
                value = None
            length += json_length(value, None) + 1
            if length > limit:
                raise _too_large(limit)
            values.append(value)
        return {"values": values}
    paths = {name: parse_path(name) for name in names}
    sizes: dict[int, int] = {}
    keys = sum(len(name) + 4 for name in paths) + 1  # "name": and a comma each, braces
    for item in array:
        ctx.check()  # each item is many values
        row = {}
        length += keys
        for count, (name, path) in enumerate(paths.items(), 1):
            row[name] = value = present(at_path(item, path))
            length += json_length(value, sizes)
            if length > limit:
                raise _too_large(limit)
            if not count % CHECK_EVERY:
                ctx.check()
        values.append(row)
    return {"values": values}


def _too_large(limit: int) -> NodeError:
    return NodeError("OUTPUT_TOO_LARGE", f"The values would be more than {limit} "
                     "characters of JSON, the limit of a node's result.")


NODE = NodeType("pluck", Payload, run, inline_when=inline,
                result=result_object({"values": {"type": "array"}}))
