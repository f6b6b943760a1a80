"""An elastic pool of daemon threads for node handlers, with a watchdog.

Why not ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so
one handler stuck forever would hold a gunicorn worker's exit hostage, and with
a fixed size a stuck thread takes a seat that a ready node then queues for.
Here every submitted task starts at once (an idle thread takes it, or a new one
is started), idle threads retire after a while, and all are daemons.

A task may hand its thread the next task of its own (it returns ``(fn, args,
cancelled)``): the engine's pool thread that finishes a node takes a ready
successor itself rather than waking another thread to run it.

Handlers stop themselves when their attempt is cancelled (``ctx.check()`` in
their loops), but Python cannot stop a thread from outside. So a watchdog looks
at the busy threads twice a second: one still running more than
``OUTLIVE_SECONDS`` after its attempt was cancelled is a bug burning CPU after
its run has answered, and the process is recycled (``on_stuck``: gunicorn's
worker finishes its current request, exits, and a fresh one takes its place).

Created lazily and per process (``pool()``, forgotten in a forked child): threads
do not survive ``fork``.
"""
from __future__ import annotations

import contextvars
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

IDLE_SECONDS = 60.0
OUTLIVE_SECONDS = 1.0
WATCH_SECONDS = 0.5

log = logging.getLogger("app.pool")

# Set by the server (gunicorn.conf.py's post_worker_init) to recycle this worker
# gracefully; None where there is nothing to recycle (tests, the CLI).
on_stuck: Callable[[], None] | None = None


class ElasticPool:
    def __init__(self, idle_seconds: float = IDLE_SECONDS):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a task and not yet promised one
        self._idle_seconds = idle_seconds
        self._busy: dict[int, Any] = {}  # thread id → its task's cancel flag (or None)
        self._watching = False
        self.stuck = False  # a thread outlived its cancelled task; on_stuck was called

    def submit(self, fn: Callable[..., Any], *args: Any, cancelled: Any = None) -> None:
        """Run ``fn(*args)`` now on a pool thread, in a copy of the caller's context;
        what it returns, ``(fn, args, cancelled)`` or None, is the next task of that
        thread (in that context).

        ``cancelled``: the task's cancel flag (``nodes.base.Cancel``), for the watchdog.
        """
        with self._lock:
            if self._idle:
                self._idle -= 1  # promise the task to one waiting thread
            else:
                threading.Thread(target=self._work, name="node", daemon=True).start()
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, name="pool-watchdog", daemon=True).start()
        self._tasks.put((contextvars.copy_context(), fn, args, cancelled))

    def _work(self) -> None:
        me = threading.get_ident()
        while True:
            try:
                context, fn, args, cancelled = self._tasks.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody promised us a task: retire
                        self._idle -= 1
                        return
                continue  # a task was promised to us as we timed out: take it
            # fn never raises (the engine wraps handlers); it may return the next task
            # to run here, in the same context: the watchdog then watches that one.
            while fn is not None:
                self._busy[me] = cancelled
                fn, args, cancelled = context.run(fn, *args) or (None, None, None)
            del context, fn, args, cancelled
            with self._lock:
                self._busy.pop(me, None)
                self._idle += 1

    def _watch(self) -> None:
        while not self.stuck:
            time.sleep(WATCH_SECONDS)
            now = time.monotonic()
            for ident, cancelled in list(self._busy.items()):
                set_at = getattr(cancelled, "set_at", None)
                if set_at is not None and now - set_at > OUTLIVE_SECONDS:
                    self._stuck(ident, now - set_at)
                    break

    def _stuck(self, ident: int, seconds: float) -> None:
        self.stuck = True
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "?"
        log.error("a node thread is still running %.1f s after its attempt was cancelled; "
                  "recycling this worker", seconds, extra={"stack": stack})
        if on_stuck is not None:
            on_stuck()


_pool: ElasticPool | None = None
_pool_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # the parent's threads are not here


os.register_at_fork(after_in_child=_reset_after_fork)


def pool() -> ElasticPool:
    """This process's pool, created on first use (after gunicorn's fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ElasticPool()
        return _pool
