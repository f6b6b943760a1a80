"""Reading a request body safely: bounded size (413), then strict JSON of bounded
depth (``jsonread``), else 400."""
from __future__ import annotations

from codecs import BOM_UTF8
from typing import IO, Any

from .errors import ApiError
from .jsonread import TooDeep, loads_strict

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


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A request body as strict JSON (``loads_strict``), else 400."""
    try:
        # (utf-8-sig's own steps: its codec, looked up by name and run in Python, costs more)
        return loads_strict((raw[3:] if raw[:3] == BOM_UTF8 else raw).decode(), max_depth)
    except TooDeep:
        raise ApiError(400, message=f"JSON is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, message=f"Body is not valid JSON: {error}") from None
