"""``pluck``: read one field (or several) from every item of ``array``.

``field`` gives a list of values; ``fields`` with one path gives the same,
with several an object per item keyed by each path as written. A value that
is absent (or an item that is not an object) gives null. Paths are item paths
(``values.parse_path``); an empty path is the item itself.
"""
from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from .base import SMALL_ARRAY, Arr, NodeContext, NodeError, PayloadSchema, Str
from .values import at_path, check_path, parse_path, present

MAX_VALUES = 1_000_000  # items × fields: beyond it the result is refused, not built


class Payload(PayloadSchema):
    array = Arr(required=True)
    field = Str(validate=check_path)
    fields = fields.List(Str(validate=check_path), validate=validate.Length(min=1))

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
    """``{values}``: one value (or object of values) per item, null where missing."""
    names = _names(data)
    if len(data["array"]) * len(names) > MAX_VALUES:
        raise NodeError("INVALID_INPUT", f"{len(data['array'])} items × {len(names)} fields "
                        f"is more than {MAX_VALUES} values.")
    paths = {name: parse_path(name) for name in names}
    if len(names) == 1:
        path = paths[names[0]]
        return {"values": [present(at_path(item, path)) for item in data["array"]]}
    return {"values": [{name: present(at_path(item, path)) for name, path in paths.items()}
                       for item in data["array"]]}
