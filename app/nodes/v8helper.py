"""Helper processes that evaluate JavaScript in V8, a few per worker.

V8 runs in a helper process, never in the worker: some builtins allocate past
mini-racer's heap cap before its check runs, and V8 then aborts the whole
process (measured: ``'x'.repeat(2**28).split('')`` killed the Python process
in under a second, "Fatal JavaScript invalid size error"). Such a crash ends
one helper and fails one call (``{"error": "died"}``).

Memory has two limits (SPEC §3): mini-racer's heap cap (128 MiB) stops
ordinary growth, and the operating system caps each helper at 256 MiB of
writable memory (``RLIMIT_DATA``, set in the helper before V8 starts), which
holds where V8's heap check does not (``new Array(1e8).fill(1.5)`` reached
1.1 GB under the heap cap alone). Not ``RLIMIT_AS``: V8 reserves large address
ranges it never touches. V8 runs ``--jitless``: its JIT reserves a 512 MiB
read-write-execute code range at start, which would count against the limit
in full; without it a helper starts with about 45 MB of writable memory.
Interpreted code runs as fast on typical transforms (mapping 10,000 objects:
9 ms either way) and about 6× slower on tight numeric loops.

At most 4 attempts of one worker run at once (``CODE_MAX_HELPERS``): others
wait for a slot within their own time limit, so a worker's helpers use at
most 4 × 256 MiB.

Each job evaluates in a fresh ``MiniRacer`` (an isolate of its own), so
nothing one call defines is visible to another. A helper serves one job at a
time and is reused afterwards, so no lock guards V8 itself. A helper still
running at the job's deadline, or whose attempt is cancelled, is killed, which
also stops builtins V8 cannot interrupt. Nothing starts at import: gunicorn
forks after importing the app, and a forked child starts with no idle helpers
and a semaphore of its own (the parent's helpers are not its to use).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from .. import config
from .base import NodeContext, NodeError

# Defaults of the settings CODE_HEAP_MIB, CODE_PROCESS_MIB and CODE_MAX_HELPERS.
HEAP_MIB = config.default("CODE_HEAP_MIB")  # a 15 MiB JSON input peaked at 41 MiB of heap
PROCESS_MIB = config.default("CODE_PROCESS_MIB")  # a helper in all; an idle one ~67 MB
MAX_HELPERS = config.default("CODE_MAX_HELPERS")  # attempts of one worker at once
# An idle helper holds about 65 MB; a call costs about 8 ms on a warm helper
# and a new helper about 0.2 s more (Python and V8 start), measured on 2 cores.
MAX_IDLE_HELPERS = 2
MAX_CALLS_PER_HELPER = 500
POLL_SECONDS = 0.02  # how often a wait looks at the attempt's cancellation

log = logging.getLogger(__name__)

# The helper process: for each job line, the job's scripts in a fresh isolate,
# then one reply line. It imports nothing from the app, so it starts fast.
# After a timeout or a memory stop it exits: the isolate may still call back.
# Its memory: V8's own heap limit (checked by its allocator, even inside
# builtins) and mini-racer's (a clean JSOOMException) at the heap size; then,
# before the first isolate, RLIMIT_DATA on all writable memory. What RSS holds
# besides is file-backed (code, ICU data: 68 MiB mapped, 42 MiB resident) and
# the stack, so the data limit is the process size less those, measured here.
# Past it V8 aborts the process (a signal) or Python raises MemoryError,
# answered with a reply prepared ahead.
_HELPER = r"""
import json, os, resource, sys, time
heap, size = int(sys.argv[1]) * 2**20, int(sys.argv[2]) * 2**20
STACK = 8 * 2**20
MEMORY = b'{"error": "memory"}\n'

def file_backed():
    total = 0
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) > 5 and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            total += end - start
    return total

def reply(job):
    deadline = time.monotonic() + job["timeout"]
    racer = MiniRacer()
    racer.set_hard_memory_limit(heap)
    try:
        for script in job["scripts"]:
            value = racer.eval(script, timeout_sec=max(0.0, deadline - time.monotonic()))
        return racer, {"value": value if isinstance(value, str) else None}
    except JSTimeoutException:
        return racer, {"error": "timeout"}
    except JSEvalException as error:
        if isinstance(error, JSOOMException) or racer.was_hard_memory_limit_reached():
            return racer, {"error": "memory"}
        return racer, {"error": "js", "message": str(error)[:10000]}
    except MemoryError:
        raise
    except Exception as error:
        return racer, {"error": "js", "message": type(error).__name__}

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a V8 abort must not write a core file
resource.setrlimit(resource.RLIMIT_STACK, (STACK, STACK))
try:
    import py_mini_racer
    from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer
    py_mini_racer.init_mini_racer(flags=(*py_mini_racer.DEFAULT_V8_FLAGS, "--jitless",
                                         f"--max-old-space-size={heap >> 20}"))
    data = max(0, size - file_backed() - STACK)
    resource.setrlimit(resource.RLIMIT_DATA, (data, data))
    for line in sys.stdin:
        racer, answer = reply(json.loads(line))
        out = memoryview(json.dumps(answer).encode() + b"\n")
        while out:
            out = out[os.write(1, out):]
        if answer.get("error") in ("timeout", "memory"):
            os._exit(0)
        racer.close()
except MemoryError:
    os.write(1, MEMORY)
    os._exit(0)
"""

# This process's helpers and slots; a forked child starts again with none.
_idle: list[_Helper] = []
_idle_lock = threading.Lock()
_slot_state: tuple[int, threading.BoundedSemaphore] | None = None  # (size, semaphore)
_slot_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _idle, _idle_lock, _slot_state, _slot_lock
    _idle, _idle_lock = [], threading.Lock()  # the parent's helpers are not ours
    _slot_state, _slot_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


# -- slots: at most MAX_HELPERS attempts of this process at once -------------------


def _slots(size: int) -> threading.BoundedSemaphore:
    """This process's semaphore of ``size`` slots, made on first use."""
    global _slot_state
    with _slot_lock:
        if _slot_state is None or _slot_state[0] != size:
            _slot_state = (size, threading.BoundedSemaphore(size))
        return _slot_state[1]


@contextlib.contextmanager
def slot(ctx: NodeContext) -> Iterator[None]:
    """Hold a slot, waiting for one until the attempt is cancelled or past its limit."""
    size = ctx.settings.get("CODE_MAX_HELPERS", MAX_HELPERS)
    slots = _slots(size)
    while not (ctx.cancelled.is_set() or ctx.time_left() <= 0):
        if slots.acquire(timeout=min(POLL_SECONDS, ctx.time_left())):
            try:
                yield
            finally:
                slots.release()
            return
    raise NodeError("TIMEOUT", "The attempt ended while waiting for a JavaScript helper "
                    f"(at most {size} run at once in a worker).", retryable=True)


# -- helper processes ----------------------------------------------------------


class _Helper:
    """One helper process with its memory limits (heap, process, in MiB); one job at a time."""

    def __init__(self, limits: tuple[int, int]) -> None:
        # -I: no PYTHON* variables, no user site; V8's crash report goes nowhere.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _HELPER, *map(str, limits)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        os.set_blocking(self.proc.stdin.fileno(), False)  # a big job must not block past the limit
        self.limits = limits
        self.calls = 0

    def ask(self, job: dict, deadline: float, cancelled: threading.Event,
            max_reply: int) -> dict:
        """The helper's reply, or ``{"error": "timeout"|"died"|"oversize"}``."""
        try:
            if not self._send(json.dumps(job).encode() + b"\n", deadline, cancelled):
                return {"error": "timeout"}
        except OSError:  # the helper is gone
            return self._died()
        return self._receive(deadline, cancelled, max_reply)

    def _died(self) -> dict:
        try:
            status = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            status = None
        log.warning("JavaScript helper stopped (exit status %s)", status)
        return {"error": "died", "status": status}

    def _send(self, data: bytes, deadline: float, cancelled: threading.Event) -> bool:
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            if not _wait(fd, False, deadline, cancelled):
                return False
            try:
                view = view[os.write(fd, view[:1 << 16]):]
            except BlockingIOError:
                continue
        return True

    def _receive(self, deadline: float, cancelled: threading.Event, max_reply: int) -> dict:
        fd, parts, size = self.proc.stdout.fileno(), [], 0
        while True:
            if not _wait(fd, True, deadline, cancelled):
                return {"error": "timeout"}
            chunk = os.read(fd, 1 << 16)
            size += len(chunk)
            if not chunk:
                return self._died()
            if size > max_reply:
                return {"error": "oversize"}
            parts.append(chunk)
            if chunk.endswith(b"\n"):  # one reply line, and nothing after it
                reply = json.loads(b"".join(parts))
                return reply if isinstance(reply, dict) else {"error": "unexpected"}

    def usable(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def _wait(fd: int, reading: bool, deadline: float, cancelled: threading.Event) -> bool:
    """True once ``fd`` is ready; False at the deadline or once the attempt is cancelled,
    looked at every ``POLL_SECONDS`` so a cancelled attempt stops its helper promptly."""
    while not cancelled.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        wait = min(left, POLL_SECONDS)
        readable, writable, _ = select.select(*([[fd], []] if reading else [[], [fd]]), [],
                                              wait)
        if readable or writable:
            return True
    return False


def ask(job: dict, limits: tuple[int, int], deadline: float, cancelled: threading.Event,
        max_reply: int) -> dict:
    """Run ``job`` (``{"scripts": [...], "timeout": seconds}``) on an idle helper with
    these ``limits`` (or a new one) until ``deadline`` (``time.monotonic()``) or
    ``cancelled``; keep the helper if it is fine.

    The reply is ``{"value": str | None}`` (the last script's value) or
    ``{"error": "timeout"|"memory"|"js"|"died"|"oversize"|"unexpected", …}``; a
    reply line longer than ``max_reply`` bytes is not read.
    """
    helper = _take_idle(limits) or _Helper(limits)
    reply: dict = {"error": "unexpected"}
    try:
        reply = helper.ask(job, deadline, cancelled, max_reply)
    finally:
        helper.calls += 1
        if not (reply.get("error") in (None, "js") and _keep(helper)):
            helper.kill()
    return reply


def _take_idle(limits: tuple[int, int]) -> _Helper | None:
    with _idle_lock:
        while _idle:
            helper = _idle.pop()
            if helper.usable() and helper.limits == limits:
                return helper
            helper.kill()
    return None


def _keep(helper: _Helper) -> bool:
    with _idle_lock:
        if (len(_idle) < MAX_IDLE_HELPERS and helper.calls < MAX_CALLS_PER_HELPER
                and helper.usable()):
            _idle.append(helper)
            return True
    return False


@atexit.register
def kill_idle() -> None:
    """Kill this process's idle helpers (at exit, and for a test that wants new ones)."""
    with _idle_lock:
        helpers = _idle[:]
        _idle.clear()
    for helper in helpers:
        helper.kill()
