"""JSON values written into text the way JavaScript writes them (SPEC §4's text rules),
and times written as SPEC §1's timestamps.

Strings as they are, numbers in their shortest round-trip form with
JavaScript's exponent rules (``2.0`` → ``2``, ``1e21`` → ``1e+21``), booleans
``true``/``false``, null as nothing, objects and arrays as compact JSON with
non-ASCII written as is — like ``String(x)`` and ``JSON.stringify(x)``.
"""
from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any


def to_text(value: Any, check: Callable[[], None] | None = None) -> str:
    """A value written into text, as JavaScript's String()/JSON.stringify would."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return stringify(value, check)
    return _scalar(value)


def stringify(value: Any, check: Callable[[], None] | None = None) -> str:
    """Compact JSON with non-ASCII as is and numbers in JavaScript's form.

    Python's C encoder writes everything as JavaScript does except some floats
    (``2.0``, ``1e-07``, ``1e+16`` where JavaScript writes ``2``, ``1e-7``,
    ``10000000000000000``); when the text may hold one, a pass over it rewrites
    them, calling ``check`` (a deadline's) every few thousand tokens.
    """
    if isinstance(value, str):
        return _encode(value)
    if not isinstance(value, (dict, list)):
        return "null" if value is None else _scalar(value)
    text = _encode(value)
    if not _MAYBE_FLOAT.search(text):
        return text
    calls = 0

    def js_float(found: re.Match) -> str:
        nonlocal calls
        calls += 1
        if check is not None and not calls % 8:
            check()
        number = found[2]
        if number is None:
            return found[1]
        if "e" in number or number == "-0.0":
            return found[1] + number_to_text(float(number))
        # Python's repr is the shortest round trip, as JavaScript's: only "2.0" differs.
        return found[1] + (number[:-2] if number.endswith(".0") else number)
    return _FLOATS.sub(js_float, text)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(value: Any) -> str:
    """``_ENCODER.encode(value)``, calling the C encoder directly as ``encode`` does, less
    the Python around it. One encoder serves every call: without circular-reference
    marks (``markers`` None), as state.dumps's — values are JSON trees, never cyclic."""
    if isinstance(value, str) or _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_C_ENCODE = json.encoder.c_make_encoder(
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
) if json.encoder.c_make_encoder else None
# Python writes a float with a '.' or an exponent: text without a digit followed by
# one of those holds no float.
_MAYBE_FLOAT = re.compile(r"[0-9][.eE]")
# At most 1000 tokens that are not floats (strings, punctuation and literals,
# integers), then a float or nothing: the replacement is called once per float and
# at least once per 1000 tokens, which is where the deadline is checked.
_FLOATS = re.compile(r"""
    ((?: "[^"\\]*+(?:\\.[^"\\]*+)*+"  # a string, escapes included
       | [^"0-9-]++                  # punctuation, true, false, null, NaN, Infinity
       | -?[0-9]++(?![.eE0-9])       # an integer
       | -(?![0-9])                  # the sign of -Infinity
    ){0,1000}+)
    (-?[0-9]++(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?)?
""", re.VERBOSE)


def json_length(value: Any, sizes: dict[int, int] | None) -> int:
    """About the length of ``value`` as compact JSON (a float may differ by a
    character or two, a short string is counted without its escapes).

    A container or a long string is measured once per ``sizes`` (by ``id``: the
    caller keeps the values alive while it counts), so a value repeated a
    thousand times costs one measurement; with ``sizes`` None a container or a
    long string counts 2 (for callers whose large values are bounded otherwise).
    """
    if isinstance(value, str) and len(value) <= _SHORT:
        return len(value) + 2
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, (int, float)):
        return len(repr(value))
    if sizes is None:
        return 2
    size = sizes.get(id(value))
    if size is None:
        size = sizes[id(value)] = len(_encode(value))
    return size


_SHORT = 256


def _scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_to_text(value)
    return str(value)


def number_to_text(number: float) -> str:
    """ECMAScript Number::toString: shortest round-trip digits, JS exponent rules."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    mantissa, _, exp = repr(abs(number)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).strip("0") or "0"
    # n: position of the decimal point relative to the digit string.
    n = len(whole.lstrip("0")) + int(exp or 0) if whole != "0" else (
        int(exp or 0) - (len(frac) - len(frac.lstrip("0"))))
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    tail = ("." + digits[1:]) if k > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if e >= 0 else '-'}{abs(e)}"


def iso_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return iso(time.time())


def iso(epoch_seconds: float) -> str:
    """``epoch_seconds`` as ISO 8601 UTC with milliseconds and ``Z``."""
    # math.trunc is int() of a float at a third of the cost of calling the type
    whole = _trunc(epoch_seconds)
    millis = _trunc((epoch_seconds - whole) * 1000)
    # A run writes a dozen timestamps: the milliseconds' text is looked up, not formatted.
    return _iso_seconds(whole) + (_MILLIS[millis] if millis >= 0 else f".{millis:03d}Z")


_trunc = math.trunc
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=64)
def _iso_seconds(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
