"""``getaddrinfo`` that its caller can stop waiting for.

The C call has no timeout of its own (glibc waits ``timeout × attempts`` for
each name server, and a server that never answers makes that seconds per
name), and a thread blocked in it cannot be interrupted. So each lookup runs on
a daemon thread of its own — blocked there, it uses no CPU — and the caller
waits for its answer only until the attempt's deadline or its cancellation.

A lookup left behind ends when the resolver gives up. At most
``MAX_ABANDONED`` of them may be outstanding in a process: past that, new
lookups fail at once, so a flood of slow names cannot pile up threads.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from ..failure import NodeError

MAX_ABANDONED = 16
POLL_S = 0.02  # how soon a waiting caller notices that its attempt was cancelled

_lock = threading.Lock()
_abandoned = 0  # lookups still running whose caller stopped waiting


def _reset_after_fork() -> None:
    global _lock, _abandoned
    _lock, _abandoned = threading.Lock(), 0  # the parent's lookup threads are not here


os.register_at_fork(after_in_child=_reset_after_fork)


def abandoned() -> int:
    """How many lookups still run after their caller stopped waiting."""
    return _abandoned


class _Lookup:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.done = threading.Event()
        self.infos: list = []
        self.error: Exception | None = None
        self.abandoned = False

    def run(self) -> None:
        global _abandoned
        try:
            self.infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except Exception as error:  # handed to the caller, who decides what it means
            self.error = error
        with _lock:
            self.done.set()
            if self.abandoned:
                _abandoned -= 1


def getaddrinfo(host: str, port: int, deadline: float | None = None,
                cancelled: threading.Event | None = None) -> list:
    """``socket.getaddrinfo(host, port, type=SOCK_STREAM)``, waited for until ``deadline``
    (``time.monotonic()``) or until ``cancelled`` is set, then ``TIMEOUT``.

    Its own errors (``OSError``, ``UnicodeError``) are raised as they are;
    ``NETWORK_ERROR`` at once when ``MAX_ABANDONED`` lookups are outstanding.
    """
    global _abandoned
    busy = NodeError("NETWORK_ERROR", f"Could not resolve {host!r}: too many earlier "
                     "lookups are still waiting for a name server.", True)
    if _abandoned >= MAX_ABANDONED:
        raise busy
    lookup = _Lookup(host, port)
    try:
        threading.Thread(target=lookup.run, name="getaddrinfo", daemon=True).start()
    except RuntimeError:  # no thread to be had
        raise busy from None
    if not _wait(lookup, deadline, cancelled):
        with _lock:
            if not lookup.done.is_set():
                lookup.abandoned = True
                _abandoned += 1
                raise NodeError("TIMEOUT", f"Resolving {host!r} did not finish within the "
                                "attempt's time limit.", True)
    if lookup.error is not None:
        raise lookup.error
    return lookup.infos


def _wait(lookup: _Lookup, deadline: float | None, cancelled: threading.Event | None) -> bool:
    """True once the lookup has answered; False when the caller must stop waiting."""
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if (left is not None and left <= 0) or (cancelled is not None and cancelled.is_set()):
            return lookup.done.is_set()
        step = left if cancelled is None else min(POLL_S, POLL_S if left is None else left)
        if lookup.done.wait(step):
            return True
