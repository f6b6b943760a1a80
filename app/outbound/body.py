"""Reading a response body within a size limit and a deadline, gzip bombs included."""
from __future__ import annotations

import zlib
from collections.abc import Callable

import urllib3

from ..failure import NodeError

CHUNK = 64 * 1024


def read_limited(raw: urllib3.HTTPResponse, headers: dict[str, str], max_size: int,
                 left: Callable[[], float]) -> bytes:
    """The body, decoded; RESPONSE_TOO_LARGE as soon as it passes ``max_size``.

    ``left()`` gives the seconds left (or raises TIMEOUT); each socket read may
    take only that long, so a server sending a byte now and then cannot
    stretch the deadline.
    """
    too_large = NodeError("RESPONSE_TOO_LARGE",
                          f"The response body exceeds {max_size} bytes.", False)
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_size:
        raise too_large
    encoding = headers.get("content-encoding", "").strip().lower()
    inflater = Inflater() if encoding in ("gzip", "x-gzip", "deflate") else None
    parts, received, size = [], 0, 0
    while True:
        sock = getattr(raw.connection, "sock", None)
        if sock is not None:
            sock.settimeout(left())
        chunk = raw.read1(CHUNK)  # whatever one socket read brings
        if not chunk:
            return b"".join(parts)
        received += len(chunk)
        if inflater is not None:
            chunk = inflater.feed(chunk, max_size - size)
        size += len(chunk)
        if size > max_size or received > max_size:
            raise too_large
        parts.append(chunk)


class Inflater:
    """gzip/zlib decoding that never produces more than one byte past the room given."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header

    def feed(self, data: bytes, room: int) -> bytes:
        parts, size = [], 0  # joined once: many small members must not cost size²
        while data and size <= room:
            parts.append(self._z.decompress(data, room + 1 - size))
            size += len(parts[-1])
            data = self._z.unused_data if self._z.eof else b""
            if not data.startswith(b"\x1f\x8b"):  # no further member: padding is ignored
                break
            self._z = zlib.decompressobj(32 + zlib.MAX_WBITS)
        return b"".join(parts)
