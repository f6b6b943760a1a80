"""Reading JSON values inside node handlers: item field paths and numeric values.

An *item path* names a field of an array item: dot segments, a numeric segment
indexing an array (or naming that key of an object), ``[n]`` also accepted
(``token.symbol``, ``rows.0.id``, ``rows[0].id``). As in expressions (SPEC §4),
only a canonical index (``0``, or digits without a leading zero) reads an array;
on an object a segment names the key as written (``01`` is the key ``"01"``).
Whitespace around segments is ignored; an empty path is the item itself. It is
the ``{{@path}}`` of the ``format`` and ``filter`` nodes and the ``field`` of
``pluck``/``list-min``/``list-max``.

A value is *numeric* when it is a JSON number (never a boolean, never NaN or
infinite) or a string that is a decimal number: an optional ``-``, digits, an
optional fraction with at least one digit, an optional exponent (``"1e3"``).
No ``+``, no spaces, no hex, no ``.5``. Numeric values compare exactly as
decimals, so ``"1000000000000000000000"`` equals ``1e21`` and big on-chain
amounts are never rounded through a float.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError

from ..expressions import MISSING, Segment, index_or_key, walk
from ..textcache import cache_short_texts

_NUMERIC = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# The "[n]" indexes after a segment's name; no two parts can match the same space, so a
# long path is scanned once.
_INDEXES = re.compile(r"(?:\[\s*[0-9]+\s*\]\s*)*")
_INDEX = re.compile(r"[0-9]+")
# {{@path}}: an item field in a format template or a filter key, never a run expression.
ITEM_HOLE = re.compile(r"\{\{\s*@([^{}]*)\}\}")


@cache_short_texts(maxsize=1024)  # the same few paths: checked, then used in every run
def parse_path(text: str) -> tuple[Segment, ...]:
    """``"rows[0].id"`` → ``("rows", 0, "id")``; ``ValueError`` naming a bad path."""
    if not text.strip():
        return ()
    segments: list[Segment] = []
    for position, part in enumerate(text.split(".")):
        bracket = part.find("[")
        name = (part if bracket < 0 else part[:bracket]).strip()
        indexes = "" if bracket < 0 else part[bracket:].lstrip()
        if "]" in name or not _INDEXES.fullmatch(indexes):
            raise ValueError(f"Invalid field path {_clip(text)}: unbalanced '[' or ']'.")
        if name:
            segments.append(index_or_key(name))
        elif position > 0 or not indexes:
            raise ValueError(f"Invalid field path {_clip(text)}: empty segment.")
        segments.extend(index_or_key(i) for i in _INDEX.findall(indexes))
    return tuple(segments)


def _clip(text: str) -> str:
    """A path as quoted in a message: long ones cut."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "…"


def check_path(text: str) -> None:
    """A marshmallow validator: ``text`` must be a well-formed item path."""
    try:
        parse_path(text)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def at_path(item: Any, segments: tuple[Segment, ...]) -> Any:
    """The value at ``segments`` inside ``item``, or ``MISSING``."""
    return walk(item, segments)


def present(value: Any) -> Any:
    """``MISSING`` as JSON null: a value that is absent reads as null."""
    return None if value is MISSING else value


def number(value: Any) -> Decimal | None:
    """The exact decimal value of a numeric value (see the module doc), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # The shortest repr is the number as written in JSON; Decimal(float)
        # would give the binary expansion (0.1 → 0.1000000000000000055…).
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return Decimal(value)
    return None


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
