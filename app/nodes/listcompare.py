"""What ``list-min`` and ``list-max`` share: picking the extreme value of an array.

Comparable values are numbers and numeric strings (``values.number``),
compared exactly as decimals. Plain strings are compared (by code point)
only when the array holds no numeric value at all; otherwise they, like
null, booleans, objects, arrays and absent fields, are skipped. The value is
returned as found (``"100"`` stays a string), with its index and item; the
first of equal values wins.
"""
from __future__ import annotations

from typing import Any

from .base import Arr, NodeError, PayloadSchema, Str
from .values import at_path, check_path, number, parse_path


class Payload(PayloadSchema):
    array = Arr(required=True)
    field = Str(validate=check_path)


def pick(data: dict, largest: bool) -> tuple[Any, int, Any]:
    """``(value, index, item)`` of the smallest (or largest) comparable value."""
    array = data["array"]
    if not array:
        raise NodeError("INVALID_INPUT", "array: the array is empty.")
    path = parse_path(data.get("field", ""))
    found = [at_path(item, path) for item in array]
    keyed = [(i, n) for i, v in enumerate(found) if (n := number(v)) is not None]
    if not keyed:
        keyed = [(i, v) for i, v in enumerate(found) if isinstance(v, str)]
    if not keyed:
        where = f"field {data['field']!r}" if data.get("field") else "item"
        raise NodeError("INVALID_INPUT", f"array: no item has a comparable {where} "
                        "(a number, a numeric string or a string).")
    best, best_key = keyed[0]
    for index, key in keyed[1:]:
        # Strict comparison: the first of equal values is kept.
        if (key > best_key) if largest else (key < best_key):
            best, best_key = index, key
    return found[best], best, array[best]
