"""app/sse.py's pacing over a real TCP connection: a write never waits for the client,
and a client that reads along gets a large chunk in a few large writes."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from app import sse

MIB = 1024 * 1024


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the server's end, the client's end) of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with server, client:
        yield server, client


def test_while_the_stream_goes_on_no_piece_waits_for_a_client_that_reads_nothing(connection):
    server, _client = connection
    ended = []

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * MIB
        ended.append(True)

    server.setblocking(False)
    written = 0
    for piece in sse.paced(chunks(), server):
        if ended:  # the rest, written at the end: that one may wait
            break
        assert server.send(piece) == len(piece)  # taken whole, at once
        written += len(piece)
    assert ended and 0 < written < 8 * MIB  # the buffers held some, not all


def test_a_client_reading_along_gets_a_large_chunk_in_few_writes(connection):
    server, client = connection
    received = []
    reader = threading.Thread(target=lambda: received.append(_read_all(client, 16 * MIB)))
    reader.start()
    pieces = 0
    for piece in sse.paced((chunk for chunk in [b"y" * (16 * MIB)]), server):
        server.sendall(piece)
        pieces += 1
    reader.join(10)
    assert received == [16 * MIB]
    assert pieces < 16 * MIB // sse.PIECE // 8  # not 8 KiB at a time (2,048 writes)


def _read_all(client: socket.socket, size: int) -> int:
    got = 0
    while got < size and (data := client.recv(MIB)):
        got += len(data)
    return got
