"""Reading a request body safely: bounded size (413), then strict JSON of bounded
depth (``jsonread``), else 400."""
from __future__ import annotations

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


def _drain(stream: IO[bytes], budget: int) -> None:
    while budget > 0:
        chunk = stream.read(min(CHUNK, budget))
        if not chunk:
            return
        budget -= len(chunk)


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A request body as strict JSON (``loads_strict``), else 400."""
    try:
        return loads_strict(raw.decode("utf-8-sig"), max_depth)
    except TooDeep:
        raise ApiError(400, message=f"JSON is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, message=f"Body is not valid JSON: {error}") from None
