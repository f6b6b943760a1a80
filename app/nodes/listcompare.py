"""What ``list-min`` and ``list-max`` share: picking the extreme value of an array.

Comparable values are numbers and numeric strings (``values.number``),
compared exactly as decimals. Plain strings are compared (by code point)
only when the array holds no numeric value at all; otherwise they, like
null, booleans, objects, arrays and absent fields, are skipped. The value is
returned as found (``"100"`` stays a string), with its index and item; the
first of equal values wins.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..dialect import Arr, Str
from ..ticks import CHECK_EVERY
from .base import NodeError, PayloadSchema
from .values import at_path, check_path, number, parse_path


class Payload(PayloadSchema):
    array = Arr(required=True)
    field = Str(validate=check_path)


def pick(data: dict, largest: bool, check: Callable[[], None]) -> tuple[Any, int, Any]:
    """``(value, index, item)`` of the smallest (or largest) comparable value.

    One pass, calling ``check`` (the attempt's deadline) every ``CHECK_EVERY`` items.
    """
    array = data["array"]
    if not array:
        raise NodeError("INVALID_INPUT", "array: the array is empty.")
    path = parse_path(data.get("field", ""))
    # (index, key) of the best numeric value, and of the best string in case none is.
    best: tuple[int, Any] | None = None
    best_text: tuple[int, str] | None = None
    for index, item in enumerate(array):
        if not index % CHECK_EVERY:
            check()
        value = at_path(item, path)
        key = number(value)
        if key is not None:
            if best is None or _beats(key, best[1], largest):
                best = index, key
        elif best is None and isinstance(value, str) and (
                best_text is None or _beats(value, best_text[1], largest)):
            best_text = index, value
    found = best if best is not None else best_text
    if found is None:
        where = f"field {data['field']!r}" if data.get("field") else "item"
        raise NodeError("INVALID_INPUT", f"array: no item has a comparable {where} "
                        "(a number, a numeric string or a string).")
    index = found[0]
    return at_path(array[index], path), index, array[index]


def _beats(key: Any, best: Any, largest: bool) -> bool:
    # Strict comparison: the first of equal values is kept.
    return key > best if largest else key < best
