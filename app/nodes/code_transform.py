"""``code-transform``: run the user's ``transform(input)`` in a fresh V8 isolate.

V8 runs in a helper process of the worker, never in the worker itself
(``v8helper``, whose docstring says why and how its memory is held to its
limits): a crash of V8 ends one helper and fails one node with ``CODE_ERROR``,
as does code past its memory limit; code past its time limit is stopped and
fails with ``TIMEOUT``. Each call evaluates in an isolate of its own, so nothing
one run defines is visible to another.

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

import json
import time

from marshmallow.validate import Range

from ..dialect import Any_, Int, Str
from ..jsonread import TooDeep, loads_strict
from ..redact import clip
from . import v8helper
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object

MAX_TIMEOUT_MS = 10_000
MAX_OUTPUT_CHARS = 5 * 2**20  # the output JSON, checked in JavaScript and again here
MAX_OUTPUT_DEPTH = 64  # as for request bodies; deeper JSON breaks Python's json
MAX_MESSAGE_CHARS = 1000
# The reply line: the output JSON escaped again, at most 6 bytes a character
# (so a reply past it cannot happen while the output cap holds).
MAX_REPLY_BYTES = 6 * MAX_OUTPUT_CHARS + 2**16
GRACE_SECONDS = 0.05

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
    heap = ctx.settings.get("CODE_HEAP_MIB", v8helper.HEAP_MIB)
    process = ctx.settings.get("CODE_PROCESS_MIB", v8helper.PROCESS_MIB)
    with v8helper.slot(ctx):
        limit = ctx.time_left()
        if limit <= 0:
            raise NodeError("TIMEOUT", "No time was left to run the code.", retryable=True)
        job = {"scripts": [_LOCKDOWN, data["code"], f"__callTransform({literal})"],
               "timeout": limit + 1.0}  # only if this process is gone: we kill it at the limit
        # The engine fails the attempt at the limit itself; killing a little later
        # keeps our TIMEOUT from racing its verdict at the run deadline.
        deadline = time.monotonic() + limit + GRACE_SECONDS
        reply = v8helper.ask(job, (heap, process), deadline, ctx.cancelled, MAX_REPLY_BYTES)
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


NODE = NodeType("code-transform", Payload, run, max_timeout_ms=MAX_TIMEOUT_MS,
                timeout_field="timeout", result=result_object({"output": {}}))
