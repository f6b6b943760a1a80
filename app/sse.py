"""Server-Sent Events (SPEC §12): batches of ``(event name, JSON text)`` as a stream.

Both sources of events — a run streamed by its own worker (``runs.Life.passes``) and
a run followed from the store (``follow.events``) — hand over a batch at least every
half second, empty when nothing happened; a batch is written as one chunk, each event
numbered (``id:``), and a comment line keeps an idle stream open.
"""
from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator

# A source hands over a batch at least this often (the engine's ticks, the follower's
# polls): a comment line written once the next might come too late keeps every quiet
# stretch within the keep-alive interval (RUNNER_STREAM_KEEPALIVE_MS).
BATCH_S = 0.5
HEADERS = {"Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}  # nginx passes it through unbuffered

Batches = Iterator[list[tuple[str, str]]]


def encode(batches: Batches, keep_alive_s: float) -> Iterator[bytes]:
    """The stream of ``batches``, never quiet for more than ``keep_alive_s``; closing it
    (the client left) closes ``batches``.

    ``data`` is one line: JSON text written by the app is compact, its strings escaped.
    """
    number, written = 0, time.monotonic()
    try:
        for batch in batches:
            now = time.monotonic()
            if batch:
                parts = []
                for name, data in batch:
                    number += 1
                    parts.append(f"id: {number}\nevent: {name}\ndata: {data}\n\n")
                written = now
                yield "".join(parts).encode()
            elif now + BATCH_S - written >= keep_alive_s:
                written = now
                yield b": keep-alive\n\n"
    finally:
        batches.close()


def waiter(connection: socket.socket | None) -> Callable[[float], bool]:
    """A pause of up to ``seconds`` that ends early, answering False, when the client at
    the other end of ``connection`` has closed it (a stream's follower leaves, and its
    worker is free at once, not at the next write)."""
    def wait(seconds: float) -> bool:
        if connection is None:
            time.sleep(seconds)
            return True
        try:
            readable = select.select([connection], [], [], seconds)[0]
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return False  # closed by the client
        except OSError:
            return False
        if readable:  # a byte of a next request: not a close; wait the time out
            time.sleep(seconds)
        return True
    return wait
