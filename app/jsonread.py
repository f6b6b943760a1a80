"""Reading JSON text strictly: what every later step can write back (no NaN or
Infinity, no number beyond a double) and nested no deeper than allowed.

Request bodies, HTTP responses and code-transform results are all read here.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def finite_float(text: str) -> float:
    """A JSON number's float, refused (``ValueError``) beyond a double's range."""
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no double holds it
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


# One decoder for every call: json.loads with hooks builds a decoder (and its scanner)
# per call. It is shared as json's own default decoder is, threads included.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=finite_float)


class TooDeep(ValueError):
    """JSON nested deeper than allowed."""


def loads_strict(text: str, max_depth: int, check: Callable[[], None] | None = None) -> Any:
    """JSON that every later step can write back: no NaN/Infinity, no number beyond a
    double, nested at most ``max_depth`` levels. ``ValueError`` (``TooDeep``) otherwise.
    ``check`` is called now and then during the depth walk (it raises to stop it)."""
    try:
        if text.startswith("\ufeff"):  # refused as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except RecursionError:
        raise TooDeep() from None
    # Fewer brackets than the limit cannot nest past it: skip the walk (most texts).
    if text.count("{") + text.count("[") > max_depth and depth_exceeds(value, max_depth,
                                                                       check):
        raise TooDeep()
    return value


def depth_exceeds(value: Any, max_depth: int, check: Callable[[], None] | None = None
                  ) -> bool:
    """True when containers nest deeper than ``max_depth`` (the top level is 1).

    About a microsecond per container: a hostile 10 MB document of empty objects
    takes seconds, so callers on a node's thread pass ``check`` (called every 4096
    containers) to stop at the attempt's limit.
    """
    stack = [(value, 1)]
    visited = 0
    while stack:
        item, depth = stack.pop()
        visited += 1
        if check is not None and not visited & 4095:
            check()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False
