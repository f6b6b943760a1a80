"""``code-transform``: run the user's ``transform(input)`` in a fresh V8 isolate.

V8 runs in a helper process, never in the worker: some builtins allocate past
mini-racer's heap cap before its check runs, and V8 then aborts the whole
process (measured: ``'x'.repeat(2**28).split('')`` killed the Python process
in under a second, "Fatal JavaScript invalid size error"). Such a crash ends
one helper and fails one node with ``CODE_ERROR``.

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

Each call evaluates in a fresh ``MiniRacer`` (an isolate of its own), so
nothing one run defines is visible to another. A helper serves one call at a
time and is reused afterwards, so no lock guards V8 itself. A helper still
running at the attempt's limit is killed, which also stops builtins V8
cannot interrupt. Nothing starts at import: gunicorn forks after importing
the app.

The isolate has no ``require``, ``process``, ``fetch`` or ``XMLHttpRequest``
(plain V8, no host APIs). Buffers are removed before the user's code runs:
their memory lies outside the heap the cap measures (a 1 GiB ``ArrayBuffer``
and a 1 GB ``WebAssembly.Memory`` were both allocated under it).

The input goes in as a JSON string literal parsed by ``JSON.parse``, never
spliced into code; the output comes back through ``JSON.stringify``, with its
rules: ``undefined``, a function or a symbol as the whole output gives null.
Both, and everything else the call relies on, are captured before the user's
code runs, so code that replaces them cannot change what is checked; Python
checks the reply's type and size again and reads it as strict JSON.
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

from marshmallow.validate import Range

from ..jsonbody import TooDeep, loads_strict
from ..redact import clip
from .base import Any_, Int, NodeContext, NodeError, NodeType, PayloadSchema, Str, result_object

MAX_TIMEOUT_MS = 10_000
# Defaults of the settings CODE_HEAP_MIB, CODE_PROCESS_MIB and CODE_MAX_HELPERS.
HEAP_MIB = 128  # a 15 MiB JSON input, parsed and mapped, peaked at 41 MiB of heap
PROCESS_MIB = 256  # a helper in all, enforced by the OS; an idle one is about 67 MB
MAX_HELPERS = 4  # attempts of one worker at once
MAX_OUTPUT_CHARS = 5 * 2**20  # the output JSON, checked in JavaScript and again here
MAX_OUTPUT_DEPTH = 64  # as for request bodies; deeper JSON breaks Python's json
MAX_MESSAGE_CHARS = 1000
# An idle helper holds about 65 MB; a call costs about 8 ms on a warm helper
# and a new helper about 0.2 s more (Python and V8 start), measured on 2 cores.
MAX_IDLE_HELPERS = 2
MAX_CALLS_PER_HELPER = 500
# The reply line: the output JSON escaped again, at most 6 bytes a character.
MAX_REPLY_BYTES = 6 * MAX_OUTPUT_CHARS + 2**16
GRACE_SECONDS = 0.05
POLL_SECONDS = 0.02  # how often a wait looks at the attempt's cancellation

log = logging.getLogger(__name__)

# Runs first, in the context the user's code then shares. It removes what
# escapes the heap cap (ArrayBuffer and WebAssembly memory; setTimeout, added
# by mini-racer, needs SharedArrayBuffer and has no event loop here), and binds
# the call to copies of everything it uses, taken before the user's code can
# replace them: a global `const` can be neither reassigned nor redeclared.
_LOCKDOWN = r"""const __callTransform = (() => {
  const banned = ["ArrayBuffer", "SharedArrayBuffer", "DataView", "Atomics", "WebAssembly",
                  "setTimeout", "clearTimeout", "__timer_manager"];
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const typedArray = name.endsWith("Array") && name !== "Array";  // Uint8Array, …
    if ((typedArray || banned.includes(name)) && !delete globalThis[name]) {
      globalThis[name] = undefined;  // a var of mini-racer's prelude: not deletable
    }
  }
  const { parse, stringify } = JSON;
  const { apply } = Reflect;
  const tag = Object.prototype.toString, slice = String.prototype.slice, text = String;
  const describe = (error) => {
    try {
      return apply(slice, text(error), [0, MAX_MESSAGE]);
    } catch (_) {
      return "(an error that cannot be shown)";
    }
  };
  // Replies are tagged strings: "O" + output JSON, or "E" + a message.
  return (input) => {
    if (typeof transform !== "function") {
      return "EThe code does not define a function transform(input).";
    }
    const output = transform(parse(input));
    if (apply(tag, output, []) === "[object Promise]") {
      return "Etransform returned a Promise; async functions are not supported.";
    }
    let json;
    try {
      json = stringify(output);
    } catch (error) {
      return "EThe output cannot be written as JSON: " + describe(error);
    }
    if (json === undefined) return "Onull";
    if (json.length > MAX_CHARS) {
      return "EThe output is " + json.length + " characters of JSON; the limit is MAX_CHARS.";
    }
    return "O" + json;
  };
})();""".replace("MAX_CHARS", str(MAX_OUTPUT_CHARS)).replace("MAX_MESSAGE", str(MAX_MESSAGE_CHARS))

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


class Payload(PayloadSchema):
    code = Str(required=True)
    input = Any_(load_default={})  # never mutated, so one shared default is safe
    timeout = Int(load_default=5000, validate=Range(min=1, max=MAX_TIMEOUT_MS))


def run(data: dict, ctx: NodeContext) -> dict:
    """Call ``transform(input)`` from ``code`` and return ``{output}``."""
    try:
        data["code"].encode("utf-8")
    except UnicodeEncodeError:
        raise NodeError("INVALID_INPUT", "code: Not valid Unicode (an unpaired surrogate).") \
            from None
    try:
        literal = json.dumps(json.dumps(data["input"], allow_nan=False))
    except (ValueError, RecursionError):
        raise NodeError("INVALID_INPUT", "input: Not a JSON value (NaN, Infinity or "
                        "nested too deeply).") from None
    heap = ctx.settings.get("CODE_HEAP_MIB", HEAP_MIB)
    process = ctx.settings.get("CODE_PROCESS_MIB", PROCESS_MIB)
    with _slot(ctx):
        limit = ctx.time_left()
        if limit <= 0:
            raise NodeError("TIMEOUT", "No time was left to run the code.", retryable=True)
        job = {"scripts": [_LOCKDOWN, data["code"], f"__callTransform({literal})"],
               "timeout": limit + 1.0}  # only if this process is gone: we kill it at the limit
        # The engine fails the attempt at the limit itself; killing a little later
        # keeps our TIMEOUT from racing its verdict at the run deadline.
        deadline = time.monotonic() + limit + GRACE_SECONDS
        reply = _ask(job, (heap, process), deadline, ctx.cancelled)
    if "error" in reply:
        raise _failure(reply, limit, heap, process)
    return {"output": _output(reply["value"])}


def _failure(reply: dict, limit: float, heap: int, process: int) -> NodeError:
    error = reply["error"]
    if error == "timeout":
        return NodeError("TIMEOUT", f"The code did not finish within its time limit of "
                         f"{round(limit * 1000)} ms.", retryable=True)
    # V8 ends its process with a signal when an allocation fails past a limit.
    if error == "memory" or (error == "died" and (reply["status"] or 0) < 0):
        return NodeError("CODE_ERROR", f"The code exceeded the memory limit ({heap} MiB of "
                         f"JavaScript heap, {process} MiB in all) and was stopped.")
    if error == "js":
        return NodeError("CODE_ERROR", _message(reply["message"]))
    if error == "oversize":
        return NodeError("CODE_ERROR", "The output is too large.")
    return NodeError("INTERNAL", "The JavaScript engine could not run "
                     f"(helper exit status {reply.get('status')}).")


def _output(reply: object) -> object:
    """The output out of the call's tagged reply: checked again, read as strict JSON."""
    if not isinstance(reply, str) or reply[:1] not in ("O", "E"):
        raise NodeError("CODE_ERROR", "The code replaced what the transform call relies on.")
    if reply[0] == "E":
        raise NodeError("CODE_ERROR", _clip(reply[1:]))
    if len(reply) - 1 > MAX_OUTPUT_CHARS:
        raise NodeError("CODE_ERROR", f"The output is {len(reply) - 1} characters of JSON; "
                        f"the limit is {MAX_OUTPUT_CHARS}.")
    try:
        return loads_strict(reply[1:], MAX_OUTPUT_DEPTH)
    except TooDeep:
        raise NodeError("CODE_ERROR", f"The output is nested deeper than {MAX_OUTPUT_DEPTH} "
                        "levels.") from None
    except ValueError as error:
        raise NodeError("CODE_ERROR", _clip(f"The output is not valid JSON: {error}")) from None


def _message(text: str) -> str:
    """``Error: boom (line 3)`` out of V8's ``<anonymous>:3: Error: boom`` + source + stack."""
    first = text.split("\n", 1)[0]
    where, sep, message = first.partition(": ")
    line = where.removeprefix("<anonymous>:")
    if sep and where.startswith("<anonymous>:") and line.isdigit():
        return _clip(f"{message} (line {line})")
    return _clip(first)


def _clip(text: str) -> str:
    # Redacted before the cut: a secret cut in half would no longer match.
    return clip(text, MAX_MESSAGE_CHARS)


# -- slots: at most MAX_HELPERS attempts of this process at once -------------------

_slot_state: tuple[int, int, threading.BoundedSemaphore] | None = None
_slot_lock = threading.Lock()


def _slots(size: int) -> threading.BoundedSemaphore:
    """This process's semaphore; made on first use, so each forked worker has its own."""
    global _slot_state
    with _slot_lock:
        if _slot_state is None or _slot_state[:2] != (os.getpid(), size):
            _slot_state = (os.getpid(), size, threading.BoundedSemaphore(size))
        return _slot_state[2]


@contextlib.contextmanager
def _slot(ctx: NodeContext) -> Iterator[None]:
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

    def ask(self, job: dict, deadline: float, cancelled: threading.Event) -> dict:
        """The helper's reply, or ``{"error": "timeout"|"died"|"oversize"}``."""
        try:
            if not self._send(json.dumps(job).encode() + b"\n", deadline, cancelled):
                return {"error": "timeout"}
        except OSError:  # the helper is gone
            return self._died()
        return self._receive(deadline, cancelled)

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

    def _receive(self, deadline: float, cancelled: threading.Event) -> dict:
        fd, parts, size = self.proc.stdout.fileno(), [], 0
        while True:
            if not _wait(fd, True, deadline, cancelled):
                return {"error": "timeout"}
            chunk = os.read(fd, 1 << 16)
            size += len(chunk)
            if not chunk:
                return self._died()
            if size > MAX_REPLY_BYTES:  # unreachable while the output cap holds
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


_idle: list[_Helper] = []
_idle_pid: int | None = None
_idle_lock = threading.Lock()


def _ask(job: dict, limits: tuple[int, int], deadline: float,
         cancelled: threading.Event) -> dict:
    """Run ``job`` on an idle helper (or a new one); keep the helper if it is fine."""
    helper = _take_idle(limits) or _Helper(limits)
    reply: dict = {"error": "unexpected"}
    try:
        reply = helper.ask(job, deadline, cancelled)
    finally:
        helper.calls += 1
        if not (reply.get("error") in (None, "js") and _keep(helper)):
            helper.kill()
    return reply


def _take_idle(limits: tuple[int, int]) -> _Helper | None:
    global _idle_pid
    with _idle_lock:
        if _idle_pid != os.getpid():  # after a fork the helpers are the parent's
            if _idle_pid is None:
                atexit.register(_kill_idle)
            _idle.clear()
            _idle_pid = os.getpid()
        while _idle:
            helper = _idle.pop()
            if helper.usable() and helper.limits == limits:
                return helper
            helper.kill()
    return None
def _keep(helper: _Helper) -> bool:
    with _idle_lock:
        if (len(_idle) < MAX_IDLE_HELPERS and helper.calls < MAX_CALLS_PER_HELPER
                and _idle_pid == os.getpid() and helper.usable()):
            _idle.append(helper)
            return True
    return False


def _kill_idle() -> None:
    with _idle_lock:
        helpers = _idle[:] if _idle_pid == os.getpid() else []
        _idle.clear()
    for helper in helpers:
        helper.kill()


NODE = NodeType("code-transform", Payload, run, max_timeout_ms=MAX_TIMEOUT_MS,
                timeout_field="timeout", result=result_object({"output": {}}))
