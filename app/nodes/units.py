"""Exact conversion between decimal amounts and integer base units (wei), as text.

Only string operations on digits: nothing goes through a float and nothing is
rounded, however many digits an amount has. A *plain decimal* is an optional
``-``, digits, and an optional ``.`` followed by digits (``"3.75"``,
``"-0.5"``, ``"007"``); no ``+``, exponent, spaces, hex, ``".5"`` or ``"5."``.
A JSON number stands for its shortest repr (``3.75``, ``1e21`` as
``1000000000000000000000``).
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, validate

from ..dialect import Int

_PLAIN = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_INTEGER = re.compile(r"(-?)([0-9]+)")


def decimals_field() -> Int:
    """``decimals``: 0..77 (uint256 holds 78 digits), default 18."""
    return Int(load_default=18, validate=validate.Range(0, 77))


def string_or_number(value: Any) -> None:
    """A marshmallow validator: a string or a JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError("Must be a decimal string or a number.")


def string_or_integer(value: Any) -> None:
    """A marshmallow validator: a string or a JSON integer (not a boolean)."""
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not (isinstance(value, str) or integral):
        raise ValidationError("Must be an integer string or an integer.")


def number_text(value: Any) -> str:
    """A JSON value as the text of an amount: strings as is, numbers without exponent."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number.")
        # The shortest repr, not the binary value: 1e300 is 10**300, not int(1e300).
        written = Decimal(repr(value))
        return format(written.to_integral_value() if value.is_integer() else written, "f")
    return str(value)


def to_base_units(text: str, decimals: int) -> str:
    """``"3.75"``, 6 → ``"3750000"``; ``ValueError`` when not exact."""
    found = _PLAIN.fullmatch(text)
    if found is None:
        raise ValueError(f"{_show(text)} is not a plain decimal number (digits, an optional "
                         "leading '-' and '.' fraction; no exponent, spaces or hex).")
    sign, whole, fraction = found.group(1), found.group(2), (found.group(3) or "").rstrip("0")
    if len(fraction) > decimals:
        raise ValueError(f"{_show(text)} has {len(fraction)} significant fractional digits, "
                         f"more than decimals ({decimals}); nothing is rounded.")
    digits = (whole + fraction.ljust(decimals, "0")).lstrip("0") or "0"
    return _signed(sign, digits)


def from_base_units(text: str, decimals: int) -> str:
    """``"3750000"``, 6 → ``"3.75"``; ``ValueError`` when not an integer."""
    found = _INTEGER.fullmatch(text)
    if found is None:
        raise ValueError(f"{_show(text)} is not an integer (digits with an optional "
                         "leading '-'; no exponent, fraction, spaces or hex).")
    sign, digits = found.group(1), found.group(2).lstrip("0") or "0"
    if decimals:
        digits = digits.rjust(decimals + 1, "0")
        whole, fraction = digits[:-decimals], digits[-decimals:].rstrip("0")
        digits = whole + ("." + fraction if fraction else "")
    return _signed(sign, digits)


def _signed(sign: str, digits: str) -> str:
    return "-" + digits if sign and digits != "0" else digits


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
