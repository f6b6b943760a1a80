"""``list-min``: the smallest value of ``array`` (or of each item's ``field``).

See ``listcompare`` for what compares and how.
"""
from __future__ import annotations

from .base import NodeContext, small_array
from .listcompare import Payload, pick

__all__ = ["Payload", "inline", "run"]

inline = small_array


def run(data: dict, ctx: NodeContext) -> dict:
    """``{min, index, item}``."""
    value, index, item = pick(data, largest=False, check=ctx.check)
    return {"min": value, "index": index, "item": item}
