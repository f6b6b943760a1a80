"""An elastic pool of daemon threads for node handlers.

Why not ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so
one handler stuck forever would hold a gunicorn worker's exit hostage, and with
a fixed size a stuck thread takes a seat that a ready node then queues for.
Here every submitted task starts at once (an idle thread takes it, or a new one
is started), idle threads retire after a while, and all are daemons.

Created lazily and per process (``pool()``): threads do not survive ``fork``.
"""
from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

IDLE_SECONDS = 60.0


class ElasticPool:
    def __init__(self, idle_seconds: float = IDLE_SECONDS):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a task and not yet promised one
        self._idle_seconds = idle_seconds

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` now on a pool thread, in a copy of the caller's context."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # promise the task to one waiting thread
            else:
                threading.Thread(target=self._work, name="node", daemon=True).start()
        self._tasks.put((contextvars.copy_context(), fn, args))

    def _work(self) -> None:
        while True:
            try:
                context, fn, args = self._tasks.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody promised us a task: retire
                        self._idle -= 1
                        return
                continue  # a task was promised to us as we timed out: take it
            context.run(fn, *args)  # fn never raises: the engine wraps handlers
            del context, fn, args
            with self._lock:
                self._idle += 1


_pool: ElasticPool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def pool() -> ElasticPool:
    """This process's pool, created on first use (after gunicorn's fork)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = ElasticPool(), os.getpid()
        return _pool
