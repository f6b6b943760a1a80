"""JSON values written into text the way JavaScript writes them (SPEC §4's text rules).

Strings as they are, numbers in their shortest round-trip form with
JavaScript's exponent rules (``2.0`` → ``2``, ``1e21`` → ``1e+21``), booleans
``true``/``false``, null as nothing, objects and arrays as compact JSON with
non-ASCII written as is — like ``String(x)`` and ``JSON.stringify(x)``.
"""
from __future__ import annotations

import json
import math
from typing import Any


def to_text(value: Any) -> str:
    """A value written into text, as JavaScript's String()/JSON.stringify would."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return stringify(value)
    return _scalar(value)


def stringify(value: Any) -> str:
    """Compact JSON with non-ASCII as is and numbers in JavaScript's form."""
    if isinstance(value, dict):
        items = (json.dumps(k, ensure_ascii=False) + ":" + stringify(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(stringify(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    return _scalar(value)


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
