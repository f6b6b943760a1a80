"""The code-transform node: JavaScript in a fresh isolate, in a helper process."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import redact
from app.nodes import code_transform, v8helper
from app.nodes.base import NodeContext, NodeError
from tests.helpers import definition, post_run, run_engine, run_nodes

LOOP = "function transform(input) { while (true) {} }"
GROW = "function transform(input) { const a = []; while (true) a.push(new Array(1e5).fill(1)); }"


def call(code: str, seconds: float = 10.0, settings: dict | None = None,
         cancelled: threading.Event | None = None, **payload) -> object:
    """Load the payload and limit the attempt as the engine does; return ``output``."""
    data = code_transform.Payload().load({"code": code, **payload})
    limit = min(seconds, data["timeout"] / 1000)  # the engine's _limit_ms, in short
    ctx = NodeContext(run_id="run_test", node_id="ct", deadline=time.monotonic() + limit,
                      settings=settings or {}, cancelled=cancelled or threading.Event())
    return code_transform.run(data, ctx)["output"]


def fails(code: str, expected: str = "CODE_ERROR", **payload) -> NodeError:
    with pytest.raises(NodeError) as caught:
        call(code, **payload)
    assert caught.value.code == expected, caught.value.as_dict()
    return caught.value


# -- results -------------------------------------------------------------------


def test_transform_returns_its_output():
    code = "function transform(input) { return {sum: input.a + input.b} }"
    assert call(code, input={"a": 1, "b": 2}) == {"sum": 3}


def test_transform_input_defaults_to_an_empty_object():
    assert call("function transform(input) { return [typeof input, Object.keys(input)] }") \
        == ["object", []]


@pytest.mark.parametrize("value", [
    None, 0, -1.5, True, "text", [], [1, [2, {"a": None}]],
    {"s": "héllo \u2028 😀 </script> \"quotes\" 'single' `tick` ${x} \\ \n end"},
])
def test_transform_input_passes_as_is(value):
    assert call("function transform(input) { return input }", input=value) == value


def test_transform_may_be_a_const_arrow_function():
    assert call("const transform = (xs) => xs.map(x => x * 2)", input=[1, 2]) == [2, 4]


@pytest.mark.parametrize("expression, expected", [
    ("undefined", None),
    ("() => 1", None),
    ("Symbol('s')", None),
    ("NaN", None),
    ("{a: () => 1, b: undefined, c: 1}", {"c": 1}),
    ("[undefined, () => 1]", [None, None]),
    ("new Date(0)", "1970-01-01T00:00:00.000Z"),
])
def test_transform_output_follows_json_stringify(expression, expected):
    assert call(f"function transform(input) {{ return {expression} }}") == expected


def test_nothing_one_call_defines_is_seen_by_the_next():
    call("var leaked = 1; globalThis.alsoLeaked = 2; Object.prototype.polluted = 3;"
         "function transform(input) { return 0 }")
    seen = call("function transform(input) {"
                " return [typeof leaked, typeof alsoLeaked, typeof ({}).polluted] }")
    assert seen == ["undefined", "undefined", "undefined"]


@pytest.mark.parametrize("name", [
    "require", "process", "fetch", "XMLHttpRequest", "setTimeout", "ArrayBuffer",
    "SharedArrayBuffer", "Uint8Array", "Float64Array", "DataView", "WebAssembly", "Atomics",
])
def test_no_host_apis_or_buffers(name):
    assert call(f"function transform(input) {{ return typeof {name} }}") == "undefined"


def test_concurrent_calls_do_not_mix():
    code = ("var mine = {n}; function transform(input) {{"
            " return [mine, input.n, typeof other] }}")
    results, errors = {}, []

    def one(n: int) -> None:
        try:
            results[n] = call(code.format(n=n), input={"n": n}, timeout=10_000)
        except Exception as error:  # collected: an assert in a thread is lost
            errors.append(error)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {n: [n, n, "undefined"] for n in range(6)}


# -- errors --------------------------------------------------------------------


def test_infinite_loop_is_a_retryable_timeout():
    started = time.monotonic()
    error = fails(LOOP, "TIMEOUT", timeout=300)
    assert error.retryable is True and "300 ms" in error.message
    assert time.monotonic() - started < 5


def test_loop_at_the_top_level_is_a_timeout():
    fails("while (true) {}", "TIMEOUT", timeout=300)


def test_time_limit_is_the_attempts_when_shorter():
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        call(LOOP, seconds=0.3, timeout=10_000)
    assert caught.value.code == "TIMEOUT"
    assert time.monotonic() - started < 5


def test_runaway_memory_is_a_code_error():
    assert "memory limit" in fails(GROW).message


def test_the_process_survives_a_loop_and_running_out_of_memory():
    fails(LOOP, "TIMEOUT", timeout=300)
    fails(GROW)
    assert call("function transform(input) { return input.x * 2 }", input={"x": 21}) == 42


def test_the_process_survives_v8_aborting():
    # V8 aborts its process on this ("Fatal JavaScript invalid size error"):
    # inside the worker it would take the worker, and this test run, down.
    error = fails("function transform(input) { return 'x'.repeat(2**28).split('').length }")
    assert "memory limit" in error.message
    assert call("function transform(input) { return 'alive' }") == "alive"


CRASHING_HELPER = """
import os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGTRAP)  # what V8's abort does
"""


def test_a_helper_killed_by_a_signal_fails_one_call(monkeypatch):
    v8helper.kill_idle()
    monkeypatch.setattr(v8helper, "_HELPER", CRASHING_HELPER)
    assert "memory limit" in fails("function transform(input) { return 1 }").message
    monkeypatch.undo()
    assert call("function transform(input) { return 1 }") == 1


def test_a_helper_that_cannot_start_is_internal(monkeypatch):
    v8helper.kill_idle()
    monkeypatch.setattr(v8helper, "_HELPER", "raise SystemExit(3)")
    error = fails("function transform(input) { return 1 }", "INTERNAL")
    assert "exit status 3" in error.message
    monkeypatch.undo()
    assert call("function transform(input) { return 1 }") == 1


FORKED = """
import os, time
from app.nodes import code_transform, v8helper
from app.nodes.base import NodeContext
ctx = NodeContext(run_id="run_test", node_id="ct", deadline=time.monotonic() + 10, settings={})
code_transform.run({"code": "function transform(input) { return 1 }", "input": {},
                    "timeout": 10000}, ctx)
assert len(v8helper._idle) == 1 and v8helper._slot_state is not None
pid = os.fork()
if pid == 0:  # a worker forked by gunicorn: none of its parent's helpers or slots
    os._exit(0 if v8helper._idle == [] and v8helper._slot_state is None else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_forked_child_starts_without_its_parents_helpers():
    # In a process of its own: forking this one, with its threads, is not safe.
    done = subprocess.run([sys.executable, "-c", FORKED], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0"]


def test_syntax_error_names_the_line():
    error = fails("function transform(input) {\n  return input +;\n}")
    assert error.message.startswith("SyntaxError:") and "(line 2)" in error.message


def test_thrown_error_names_the_message_and_line():
    error = fails("function transform(input) {\n  throw new TypeError('bad ' + input.n)\n}",
                  input={"n": 7})
    assert error.message == "TypeError: bad 7 (line 2)"
    assert error.retryable is False


def test_thrown_string():
    assert fails("function transform(input) { throw 'plain' }").message == "plain (line 1)"


def test_long_messages_are_clipped():
    error = fails("function transform(input) { throw 'x'.repeat(5000) }")
    assert len(error.message) <= code_transform.MAX_MESSAGE_CHARS + 1


@pytest.mark.parametrize("code, words", [
    ("var x = 1", "does not define a function transform"),
    ("var transform = 5", "does not define a function transform"),
    ("async function transform(input) { return 1 }", "Promise"),
    ("function transform(input) { return 1n }", "cannot be written as JSON"),
    ("function transform(input) { const a = {}; a.a = a; return a }",
     "cannot be written as JSON"),
    ("function transform(input) { let a = []; for (let i = 0; i < 100; i++) a = [a];"
     " return a }", "nested deeper than 64"),
    ("function transform(input) { return null.x }", "TypeError"),
    ("function transform(input) { return 'x'.repeat(5 * 2**20 + 1) }", "the limit is"),
])
def test_code_errors(code, words):
    assert words in fails(code).message


def test_unpaired_surrogate_in_code_is_invalid_input():
    error = fails("function transform(input) { return '\ud800' }", "INVALID_INPUT")
    assert error.message.startswith("code:")


def test_input_that_is_not_json_is_invalid_input():
    data = {"code": "function transform(input) { return 1 }", "input": float("nan"),
            "timeout": 5000}
    ctx = NodeContext(run_id="run_test", node_id="ct", deadline=time.monotonic() + 10)
    with pytest.raises(NodeError) as caught:
        code_transform.run(data, ctx)
    assert caught.value.code == "INVALID_INPUT" and caught.value.message.startswith("input:")


# -- the output cannot be tampered with ---------------------------------------------


@pytest.mark.parametrize("tampering", [
    # length 0 passed the size check, then toString gave 6 MB
    "JSON.stringify = () => ({length: 0, toString() { return 'x'.repeat(6e6) }});",
    "JSON.stringify = () => 'NaN';",
    "JSON.stringify = () => '1e400';",
    "JSON.parse = () => ({evil: true});",
    "Object.prototype.toString = () => '[object Promise]';",
    "String.prototype.slice = () => 'x'.repeat(6e6); String = () => 'x'.repeat(6e6);",
    "Reflect.apply = () => 'x'; globalThis.__callTransform = () => 'ONaN';",
])
def test_replacing_globals_does_not_change_the_output(tampering):
    code = tampering + " function transform(input) { return {n: input.n} }"
    assert call(code, input={"n": 1}) == {"n": 1}


def test_the_output_cap_holds_when_to_json_is_replaced():
    code = ("Object.prototype.toJSON = function () { return 'x'.repeat(6e6) };"
            " function transform(input) { return {} }")
    assert "the limit is 5242880" in fails(code).message


def test_the_call_cannot_be_redeclared():
    assert "already been declared" in fails(
        "const __callTransform = () => 'ONaN'; function transform(input) { return 1 }").message


@pytest.mark.parametrize("reply, words", [
    ("O" + "1" * (code_transform.MAX_OUTPUT_CHARS + 1), "the limit is"),
    ("ONaN", "not valid JSON"),
    ("O-Infinity", "not valid JSON"),
    ("O[1e400]", "out of range"),
    ("O[1,", "not valid JSON"),
    ("O" + "[" * 65 + "]" * 65, "nested deeper than 64"),
    (5, "replaced what the transform call relies on"),
    ("Xyz", "replaced what the transform call relies on"),
])
def test_the_reply_is_checked_again_in_python(reply, words):
    with pytest.raises(NodeError) as caught:
        code_transform._output(reply)
    assert caught.value.code == "CODE_ERROR" and words in caught.value.message


def test_a_secret_cut_in_half_by_clipping_does_not_show():
    secret = "s3cr3t-value-42"
    token = redact.current.set(redact.Redactor([secret]))
    try:
        error = fails(f"function transform(input) {{ throw 'x'.repeat(990) + '{secret}' }}")
    finally:
        redact.current.reset(token)
    assert "s3cr3t" not in error.message


# -- at most CODE_MAX_HELPERS attempts of a worker at once -----------------------------

BUSY = ("function transform(input) { const start = Date.now();"
        " while (Date.now() - start < input.ms) {} return [start, Date.now()] }")


def in_threads(count: int, fn) -> list:
    results, threads = [None] * count, []

    def one(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as error:  # kept: an assert in a thread is lost
            results[i] = error

    for i in range(count):
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return results


def test_at_most_four_attempts_run_at_once():
    spans = in_threads(7, lambda i: call(BUSY, input={"ms": 1000}))
    assert all(isinstance(span, list) for span in spans), spans
    most = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert 2 <= most <= v8helper.MAX_HELPERS


def test_an_attempt_waiting_for_a_helper_times_out_within_its_limit():
    settings = {"CODE_MAX_HELPERS": 1}
    busy = threading.Thread(target=call, args=(BUSY,), kwargs={
        "input": {"ms": 1500}, "settings": settings})
    busy.start()
    time.sleep(0.3)  # the busy call holds the only slot
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        call("function transform(input) { return 1 }", seconds=0.3, settings=settings)
    waited = time.monotonic() - started
    busy.join()
    assert caught.value.code == "TIMEOUT" and "waiting for a JavaScript helper" in \
        caught.value.message
    assert 0.25 < waited < 0.6


def test_a_cancelled_attempt_stops_waiting_for_a_helper():
    settings, cancelled = {"CODE_MAX_HELPERS": 1}, threading.Event()
    busy = threading.Thread(target=call, args=(BUSY,), kwargs={
        "input": {"ms": 1500}, "settings": settings})
    busy.start()
    time.sleep(0.3)
    threading.Timer(0.2, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        call("function transform(input) { return 1 }", settings=settings, cancelled=cancelled)
    waited = time.monotonic() - started
    busy.join()
    assert caught.value.code == "TIMEOUT" and waited < 0.5


def test_a_cancelled_attempt_stops_its_helper():
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        call(LOOP, cancelled=cancelled, timeout=10_000)
    assert caught.value.code == "TIMEOUT" and time.monotonic() - started < 1.0


@pytest.mark.parametrize("payload, field", [
    ({}, "code"),
    ({"code": 5}, "code"),
    ({"code": "", "timeout": 10_001}, "timeout"),
    ({"code": "", "timeout": 0}, "timeout"),
    ({"code": "", "timeout": "5000"}, "timeout"),
])
def test_code_transform_schema_rejects(payload, field):
    assert field in code_transform.Payload().validate(payload)


def test_code_transform_schema_defaults():
    assert code_transform.Payload().load({"code": ""}) == {
        "code": "", "input": {}, "timeout": 5000}


# -- through the engine and HTTP ------------------------------------------------


def test_transform_result_feeds_later_nodes():
    out = run_nodes(
        "root>ct", "ct>say",
        ct={"type": "code-transform", "payload": {
            "code": "function transform(items) {"
                    " return {total: items.reduce((s, i) => s + i.price, 0)} }",
            "input": "{{root.result.items}}"}},
        say={"type": "log", "payload": {"message": "total {{ct.result.output.total}}"}},
        payload={"items": [{"price": 1.5}, {"price": 2}]})
    assert out["status"] == "success", out["error"]
    assert out["executionState"]["ct"]["result"] == {"output": {"total": 3.5}}
    assert out["executionState"]["say"]["result"]["message"] == "total 3.5"


def test_payload_timeout_limits_the_attempt_in_the_engine():
    out = run_nodes("root>ct", ct={"type": "code-transform",
                                   "payload": {"code": LOOP, "timeout": 200}})
    state = out["executionState"]["ct"]
    assert state["status"] == "failure" and state["error"]["code"] == "TIMEOUT"
    assert out["durationMs"] < 5000


def test_run_deadline_ends_a_transform():
    body = {"definition": definition("root>ct", ct={
        "type": "code-transform", "payload": {"code": LOOP}}), "timeoutMs": 300}
    started = time.monotonic()
    out = run_engine(body)
    assert time.monotonic() - started < 5
    assert out["error"]["code"] == "RUN_TIMEOUT"
    state = out["executionState"]["ct"]
    assert state["status"] == "failure" and state["error"]["code"] == "TIMEOUT"


def test_resolved_timeout_above_maximum_is_invalid_input():
    out = run_nodes("root>ct", ct={"type": "code-transform", "payload": {
        "code": "function transform(i) { return i }", "timeout": "{{root.result.t}}"}},
        payload={"t": 20_000})
    state = out["executionState"]["ct"]
    assert state["status"] == "failure" and state["error"]["code"] == "INVALID_INPUT"


def test_http_timeout_above_maximum_is_400(client):
    body = {"definition": definition("root>ct", ct={"type": "code-transform", "payload": {
        "code": "function transform(i) { return i }", "timeout": 20_000}})}
    response = post_run(client, body)
    assert response.status_code == 400
    assert response.json["code"] == 400228
    assert "definition.nodes.ct.payload.timeout" in response.json["errors"]


def test_http_syntax_error_fails_the_node_not_the_request(client):
    body = {"definition": definition("root>ct", ct={"type": "code-transform", "payload": {
        "code": "function transform(i) { return i +; }"}})}
    response = post_run(client, body)
    assert response.status_code == 200, response.json
    state = response.json["executionState"]["ct"]
    assert state["status"] == "failure" and state["error"]["code"] == "CODE_ERROR"
