"""Reading a request body safely: bounded size, strict JSON, bounded depth."""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import IO, Any

from .errors import ApiError

CHUNK = 64 * 1024
DRAIN_FACTOR = 8  # read (and drop) up to 8× the limit so the 413 reaches the client


def read_body(stream: IO[bytes], content_length: int | None, limit: int) -> bytes:
    """The whole body, or 413 once it exceeds ``limit`` bytes.

    A body declared too large, or found too large while reading (chunked
    bodies have no length), is drained up to a bound before answering: gunicorn's
    sync worker closes the socket right after the response, and closing it with
    unread data makes the kernel reset the connection, so the client would
    see a reset instead of the 413.
    """
    if content_length is not None and content_length > limit:
        _drain(stream, limit * DRAIN_FACTOR)
        raise ApiError(413, message=f"Request body exceeds {limit} bytes")
    parts, size = [], 0
    while True:
        chunk = stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            _drain(stream, limit * DRAIN_FACTOR)
            raise ApiError(413, message=f"Request body exceeds {limit} bytes")


def _drain(stream: IO[bytes], budget: int) -> None:
    while budget > 0:
        chunk = stream.read(min(CHUNK, budget))
        if not chunk:
            return
        budget -= len(chunk)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no double holds it
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


class TooDeep(ValueError):
    """JSON nested deeper than allowed."""


def loads_strict(text: str, max_depth: int, check: Callable[[], None] | None = None) -> Any:
    """JSON that every later step can write back: no NaN/Infinity, no number beyond a
    double, nested at most ``max_depth`` levels. ``ValueError`` (``TooDeep``) otherwise.
    ``check`` is called now and then during the depth walk (it raises to stop it)."""
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise TooDeep() from None
    # Fewer brackets than the limit cannot nest past it: skip the walk (most texts).
    if text.count("{") + text.count("[") > max_depth and depth_exceeds(value, max_depth,
                                                                       check):
        raise TooDeep()
    return value


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A request body as strict JSON (``loads_strict``), else 400."""
    try:
        return loads_strict(raw.decode("utf-8-sig"), max_depth)
    except TooDeep:
        raise ApiError(400, message=f"JSON is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, message=f"Body is not valid JSON: {error}") from None


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
