"""Server-Sent Events (SPEC §12): batches of ``(event name, JSON text)`` as a stream.

Both sources of events — a run streamed by its own worker (``runs.Life.passes``) and
a run followed from the store (``follow.events``) — hand over a batch at least every
half second, empty when nothing happened; a batch is written as one chunk, each event
numbered (``id:``), and a comment line keeps an idle stream open.

The worker writes a stream between the passes of the run it streams, so a client that
is slow to read must not make it wait: ``paced`` writes only what the client's socket
can take now and holds the rest while the run goes on.
"""
from __future__ import annotations

import select
import socket
import struct
import sys
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


# Written at a time where the free space of a socket's send buffer cannot be read: less
# than a socket that polls as writable takes at once (on Linux its free space is then at
# least half of what it holds, of a buffer of 16 KiB or more), so a write does not wait
# for the client to read.
PIECE = 8 * 1024
# getsockopt(SOL_SOCKET, SO_MEMINFO) on Linux: the socket's memory, nine counters, of
# which the send buffer's size and what its queue takes now (data and the kernel's
# overhead, a few % for large writes).
# (Not in Python's socket module; elsewhere the number means something else.)
SO_MEMINFO = 55 if sys.platform.startswith("linux") else None
SNDBUF, WMEM_QUEUED = 3, 5


def paced(stream: Iterator[bytes], connection: socket.socket | None) -> Iterator[bytes]:
    """``stream`` written no faster than the client at the other end of ``connection``
    reads it: while its socket cannot take more, the next chunks are made (the run goes
    on: its ticks, deadline and partial state) and held; what is held is written as the
    socket takes it (``_room``), and the rest at the end. Closing it closes ``stream``."""
    if connection is None:  # (not gunicorn: written as made)
        yield from stream
        return
    held, sent = bytearray(), 0  # held[sent:] is still to write
    try:
        for chunk in stream:
            held += chunk
            while sent < len(held) and (room := _room(connection)):
                piece = bytes(held[sent:sent + room])
                sent += len(piece)
                yield piece
            if sent > len(held) // 2:  # (each byte is moved once at most, on average)
                del held[:sent]
                sent = 0
        if sent < len(held):
            yield bytes(held[sent:])
    finally:
        stream.close()


def _room(connection: socket.socket) -> int:
    """How much ``connection`` takes now without waiting for the client to read: half
    its send buffer's free space (room for the kernel's overhead and gunicorn's chunk
    framing; measured, a loopback client reading along: a 31 MiB answer goes in about
    ten writes, not 4,000 of ``PIECE``), or ``PIECE`` when it polls as writable where
    that space cannot be read; 0: it takes nothing now."""
    try:
        info = None if SO_MEMINFO is None else \
            connection.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
    except OSError:
        info = None
    if info is not None and len(info) == 36:
        memory = struct.unpack("9I", info)
        room = (memory[SNDBUF] - memory[WMEM_QUEUED]) // 2
        return room if room >= PIECE else 0
    try:
        return PIECE if select.select([], [connection], [], 0)[1] else 0
    except (OSError, ValueError):
        return PIECE  # closed: the write fails, and the stream is closed


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
