"""``code-transform``: run the user's ``transform(input)`` in a fresh V8 isolate.

V8 runs in a helper process, never in the worker: some builtins allocate past
mini-racer's heap cap before its check runs, and V8 then aborts the whole
process (measured: ``'x'.repeat(2**28).split('')`` killed the Python process
in under a second, "Fatal JavaScript invalid size error"; ``new
Array(2**30).fill(0)`` reached 383 MB under a 64 MiB cap, then "invalid table
size"). Such a crash now ends one helper and fails one node with ``CODE_ERROR``.

Each call evaluates in a fresh ``MiniRacer`` (an isolate of its own), so
nothing one run defines is visible to another. A helper serves one call at a
time and is reused afterwards, so no lock guards V8 itself. A helper still
running at the attempt's limit is killed, which also stops builtins V8
cannot interrupt (``new Array(1e8).fill(1.5)`` ran 3.5 s past a 10 s
timeout). Nothing starts at import: gunicorn forks after importing the app.

The isolate has no ``require``, ``process``, ``fetch`` or ``XMLHttpRequest``
(plain V8, no host APIs) and a 64 MiB heap cap. Buffers are removed before the
user's code runs: their memory lies outside the heap the cap measures (a 1 GiB
``ArrayBuffer`` and a 1 GB ``WebAssembly.Memory`` were both allocated under it).

The input goes in as a JSON string literal parsed by ``JSON.parse``, never
spliced into code; the output comes back through ``JSON.stringify``, with its
rules: ``undefined``, a function or a symbol as the whole output gives null.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time

from marshmallow.validate import Range

from ..jsonbody import depth_exceeds
from .base import Any_, Int, NodeContext, NodeError, PayloadSchema, Str

MAX_TIMEOUT_MS = 10_000
TIMEOUT_FIELD = "timeout"
MEMORY_LIMIT_MIB = 64  # a 15 MiB JSON input, parsed and mapped, peaked at 41 MiB of heap
MAX_OUTPUT_CHARS = 5 * 2**20  # the output JSON, measured in JavaScript before it leaves V8
MAX_OUTPUT_DEPTH = 64  # as for request bodies; deeper JSON breaks Python's json
MAX_MESSAGE_CHARS = 1000
# An idle helper holds about 64 MB; a call costs about 8 ms on a warm helper
# and a new helper about 0.2 s more (Python and V8 start), measured on 2 cores.
MAX_IDLE_HELPERS = 2
MAX_CALLS_PER_HELPER = 500
MAX_REPLY_BYTES = 64 * 2**20  # the output JSON, escaped into the reply line
GRACE_SECONDS = 0.05

log = logging.getLogger(__name__)

# ArrayBuffer and WebAssembly memory escape the heap cap; setTimeout (added by
# mini-racer) needs SharedArrayBuffer and has no event loop to run on here.
_LOCKDOWN = r"""(() => {
  const banned = ["ArrayBuffer", "SharedArrayBuffer", "DataView", "Atomics", "WebAssembly",
                  "setTimeout", "clearTimeout", "__timer_manager"];
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const typedArray = name.endsWith("Array") && name !== "Array";  // Uint8Array, …
    if ((typedArray || banned.includes(name)) && !delete globalThis[name]) {
      globalThis[name] = undefined;  // a var of mini-racer's prelude: not deletable
    }
  }
})();"""

# Replies are tagged strings: "O" + output JSON, or "E" + a message.
_CALL = r"""(() => {
  if (typeof transform !== "function") {
    return "EThe code does not define a function transform(input).";
  }
  const output = transform(JSON.parse(%(input)s));
  if (Object.prototype.toString.call(output) === "[object Promise]") {
    return "Etransform returned a Promise; async functions are not supported.";
  }
  let text;
  try {
    text = JSON.stringify(output);
  } catch (error) {
    return "EThe output cannot be written as JSON: " + error;
  }
  if (text === undefined) return "Onull";
  if (text.length > %(max)d) {
    return "EThe output is " + text.length + " characters of JSON; the limit is %(max)d.";
  }
  return "O" + text;
})()"""

# The helper process: for each job line, the job's scripts in a fresh isolate,
# then one reply line. It imports nothing from the app, so it starts fast.
# After a timeout or a memory stop it exits: the isolate may still call back.
_HELPER = r"""
import json, os, resource, sys, time
from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a V8 abort must not write a core file

for line in sys.stdin:
    job = json.loads(line)
    deadline = time.monotonic() + job["timeout"]
    racer = MiniRacer()
    racer.set_hard_memory_limit(job["memory"])
    try:
        for script in job["scripts"]:
            value = racer.eval(script, timeout_sec=max(0.0, deadline - time.monotonic()))
        reply = {"value": value if isinstance(value, str) else None}
    except JSTimeoutException:
        reply = {"error": "timeout"}
    except JSEvalException as error:
        memory = isinstance(error, JSOOMException) or racer.was_hard_memory_limit_reached()
        reply = {"error": "memory"} if memory else {"error": "js", "message": str(error)}
    except Exception as error:
        reply = {"error": "js", "message": type(error).__name__}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    if reply.get("error") in ("timeout", "memory"):
        os._exit(0)
    racer.close()
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
    limit = ctx.time_left()
    if limit <= 0:
        raise NodeError("TIMEOUT", "No time was left to run the code.", retryable=True)
    job = {"scripts": [_LOCKDOWN, data["code"],
                       _CALL % {"input": literal, "max": MAX_OUTPUT_CHARS}],
           "timeout": limit + 1.0,  # only if this process is gone: we kill it at the limit
           "memory": MEMORY_LIMIT_MIB * 2**20}
    # The engine fails the attempt at the limit itself; killing a little later
    # keeps our TIMEOUT from racing its verdict at the run deadline.
    reply = _ask(job, time.monotonic() + limit + GRACE_SECONDS)
    if "error" in reply:
        raise _failure(reply, limit)
    return {"output": _output(reply["value"])}


def _failure(reply: dict, limit: float) -> NodeError:
    error = reply["error"]
    if error == "timeout":
        return NodeError("TIMEOUT", f"The code did not finish within its time limit of "
                         f"{round(limit * 1000)} ms.", retryable=True)
    # V8 ends its process with a signal when an allocation fails past the cap.
    if error == "memory" or (error == "died" and (reply["status"] or 0) < 0):
        return NodeError("CODE_ERROR", f"The code exceeded the memory limit of "
                         f"{MEMORY_LIMIT_MIB} MiB and was stopped.")
    if error == "js":
        return NodeError("CODE_ERROR", _message(reply["message"]))
    if error == "oversize":
        return NodeError("CODE_ERROR", "The output is too large.")
    return NodeError("INTERNAL", "The JavaScript engine could not run "
                     f"(helper exit status {reply.get('status')}).")


def _output(reply: object) -> object:
    if not isinstance(reply, str) or reply[:1] not in ("O", "E"):
        raise NodeError("CODE_ERROR", "The code replaced what the transform call relies on.")
    if reply[0] == "E":
        raise NodeError("CODE_ERROR", _clip(reply[1:]))
    try:
        output = json.loads(reply[1:])
        too_deep = depth_exceeds(output, MAX_OUTPUT_DEPTH)
    except RecursionError:  # JavaScript can nest far deeper than Python's json reads
        too_deep = True
    if too_deep:
        raise NodeError("CODE_ERROR", f"The output is nested deeper than {MAX_OUTPUT_DEPTH} "
                        "levels.")
    return output


def _message(text: str) -> str:
    """``Error: boom (line 3)`` out of V8's ``<anonymous>:3: Error: boom`` + source + stack."""
    first = text.split("\n", 1)[0]
    where, sep, message = first.partition(": ")
    line = where.removeprefix("<anonymous>:")
    if sep and where.startswith("<anonymous>:") and line.isdigit():
        return _clip(f"{message} (line {line})")
    return _clip(first)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


# -- helper processes ----------------------------------------------------------


class _Helper:
    """One helper process; one job at a time."""

    def __init__(self) -> None:
        # -I: no PYTHON* variables, no user site; V8's crash report goes nowhere.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _HELPER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        os.set_blocking(self.proc.stdin.fileno(), False)  # a big job must not block past the limit
        self.calls = 0

    def ask(self, job: dict, deadline: float) -> dict:
        """The helper's reply, or ``{"error": "timeout"|"died"|"oversize"}``."""
        try:
            if not self._send(json.dumps(job).encode() + b"\n", deadline):
                return {"error": "timeout"}
        except OSError:  # the helper is gone
            return self._died()
        return self._receive(deadline)

    def _died(self) -> dict:
        try:
            status = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            status = None
        log.warning("JavaScript helper stopped (exit status %s)", status)
        return {"error": "died", "status": status}

    def _send(self, data: bytes, deadline: float) -> bool:
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                return False
            try:
                view = view[os.write(fd, view[:1 << 16]):]
            except BlockingIOError:
                continue
        return True

    def _receive(self, deadline: float) -> dict:
        fd, parts, size = self.proc.stdout.fileno(), [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return {"error": "timeout"}
            chunk = os.read(fd, 1 << 16)
            size += len(chunk)
            if not chunk:
                return self._died()
            if size > MAX_REPLY_BYTES:  # unreachable while the output cap holds
                return {"error": "oversize"}
            parts.append(chunk)
            if chunk.endswith(b"\n"):  # one reply line, and nothing after it
                return json.loads(b"".join(parts))

    def usable(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


_idle: list[_Helper] = []
_idle_pid: int | None = None
_idle_lock = threading.Lock()


def _ask(job: dict, deadline: float) -> dict:
    """Run ``job`` on an idle helper (or a new one); keep the helper if it is fine."""
    helper = _take_idle() or _Helper()
    reply: dict = {"error": "unexpected"}
    try:
        reply = helper.ask(job, deadline)
    finally:
        helper.calls += 1
        if not (reply.get("error") in (None, "js") and _keep(helper)):
            helper.kill()
    return reply


def _take_idle() -> _Helper | None:
    global _idle_pid
    with _idle_lock:
        if _idle_pid != os.getpid():  # after a fork the helpers are the parent's
            if _idle_pid is None:
                atexit.register(_kill_idle)
            _idle.clear()
            _idle_pid = os.getpid()
        while _idle:
            helper = _idle.pop()
            if helper.usable():
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
