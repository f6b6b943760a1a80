"""Reading a request body safely: bounded size (413), then strict JSON of bounded
depth (``jsonread``), else 400."""
from __future__ import annotations

from codecs import BOM_UTF8
from typing import IO, Any

import orjson

from .errors import ApiError
from .jsonread import TooDeep, depth_exceeds, loads_strict

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


def read_exactly(stream: IO[bytes], length: int) -> bytes:
    """A body of a known ``length`` from a stream nothing ends (the development server's
    socket), as Werkzeug's ``LimitedStream`` reads it: never past ``length`` (a read
    past it would wait for bytes the client never sends), and a client gone before the
    end is a 400, as Werkzeug's ``ClientDisconnected`` is answered."""
    parts, left = [], length
    while left > 0:
        try:
            chunk = stream.read(min(CHUNK, left))
        except (OSError, ValueError):
            raise ApiError(400) from None
        if not chunk:
            raise ApiError(400)
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _drain(stream: IO[bytes], budget: int) -> None:
    while budget > 0:
        chunk = stream.read(min(CHUNK, budget))
        if not chunk:
            return
        budget -= len(chunk)


# A body's bytes with every digit a "0", "[" a "{", "E" and "." an "e" (a float has a
# digit then one of them): what ``parse_json`` looks for in them (a byte for a byte: no
# byte of a UTF-8 sequence is below 0x80).
_SCAN = bytes.maketrans(b"123456789[E.", b"000000000{ee")
_LONG_INT = b"0" * 19  # beyond 2**63 a number has 19 digits at least


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A request body as strict JSON (``loads_strict``), else 400.

    A body without a float nor a number of 19 digits or more (nor that pattern in a
    string: most bodies) is read by orjson, in half json's instructions, with the same
    value: orjson reads a number beyond 64 bits as a float where json reads an int, and
    reads floats its own way, so a body where one may be is json's. orjson refuses all
    that json refuses, and more (a lone surrogate, nesting past 1024): a body it refuses
    is json's too, which answers it (tests/test_api.py compares the two)."""
    body = raw[3:] if raw[:3] == BOM_UTF8 else raw
    scan = body.translate(_SCAN)
    if b"0e" not in scan and _LONG_INT not in scan:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:  # as ``loads_strict``: fewer brackets than the limit cannot nest past it
            if scan.count(b"{") > max_depth and depth_exceeds(value, max_depth):
                raise ApiError(400, message=f"JSON is nested deeper than {max_depth} levels")
            return value
    try:
        # (utf-8-sig's own steps: its codec, looked up by name and run in Python, costs more)
        return loads_strict(body.decode(), max_depth)
    except TooDeep:
        raise ApiError(400, message=f"JSON is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, message=f"Body is not valid JSON: {error}") from None
