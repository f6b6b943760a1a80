"""Node types that exist only in tests, to drive the engine into every state.

They follow the node contract of ``app.nodes.base`` and are put into the
registry by the ``test_nodes`` fixture, so validation and the engine treat
them exactly like built-in types.
"""
from __future__ import annotations

import threading
import time

from app.dialect import Any_, Int, Str
from app.logconfig import request_id
from app.nodes.base import NodeError, NodeType, PayloadSchema


class _Payload(PayloadSchema):
    name = Str()
    code = Str(load_default="NETWORK_ERROR")
    failures = Int(load_default=0)
    value = Any_()


barrier = threading.Barrier(2, timeout=10)
events: dict[str, threading.Event] = {}
attempt_times: dict[str, list[float]] = {}
release = threading.Event()  # set at teardown so hung threads end


def _event(name: str) -> threading.Event:
    return events.setdefault(name, threading.Event())


def _meet(data, ctx):
    """Wait at the two-party barrier: only succeeds if a sibling runs at once."""
    barrier.wait()
    return {"met": True}


def _signal(data, ctx):
    _event(data["name"]).set()
    return {"signalled": data["name"]}


def _await(data, ctx):
    """Succeed only if the named event is set by another node within 10 s."""
    if not _event(data["name"]).wait(10):
        raise NodeError("INTERNAL", "never signalled")
    return {"awaited": data["name"]}


def _fail(data, ctx):
    retryable = data["code"] in {"NETWORK_ERROR", "TIMEOUT"}
    raise NodeError(data["code"], f"failed with {data['code']}", retryable)


def _flaky(data, ctx):
    """Fail (retryably) the first ``failures`` attempts of this run's node."""
    times = attempt_times.setdefault(f"{ctx.run_id}/{ctx.node_id}", [])
    times.append(time.monotonic())
    if len(times) <= data["failures"]:
        raise NodeError(data["code"], f"attempt {len(times)} failed", True)
    return {"attempts": len(times)}


def _hang(data, ctx):
    """Ignore cancellation: block until the test module releases everyone."""
    release.wait(30)
    return {"late": True}


def _spin(data, ctx):
    """Busy until cancelled, checking as handlers must (SPEC §3)."""
    spins = 0
    while True:
        ctx.check()
        spins += 1


def _busy(data, ctx):
    """A handler bug: burn CPU for ``failures`` seconds (default 3), ignoring cancellation."""
    until = time.monotonic() + (data["failures"] or 3)
    while time.monotonic() < until and not release.is_set():
        pass
    return {"late": True}


def _big(data, ctx):
    """A result of ``failures`` characters (as JSON, about)."""
    return {"text": "x" * data["failures"]}


def _crash(data, ctx):
    raise RuntimeError("secret internals")


def _echo(data, ctx):
    return {"value": data.get("value"), "requestId": request_id.get()}


class _FailIfPayload(PayloadSchema):
    fail = Any_()
    equals = Any_()


def _fail_if(data, ctx):
    """Fail when ``fail`` equals ``equals`` (one item of a loop, say)."""
    if data.get("fail") == data.get("equals"):
        raise NodeError("HTTP_ERROR", f"failed on {data.get('fail')!r}")
    return {"value": data.get("fail")}


TEST_TYPES = {node.name: node for node in (
    NodeType("t-meet", _Payload, _meet, result={}),
    NodeType("t-signal", _Payload, _signal, result={}),
    NodeType("t-await", _Payload, _await, result={}),
    NodeType("t-fail", _Payload, _fail, result={}),
    NodeType("t-flaky", _Payload, _flaky, result={}),
    NodeType("t-hang", _Payload, _hang, result={}),
    NodeType("t-spin", _Payload, _spin, result={}),
    NodeType("t-spin-inline", _Payload, _spin, result={}, inline=True),
    NodeType("t-busy", _Payload, _busy, result={}),
    NodeType("t-big", _Payload, _big, result={}, inline=True),
    NodeType("t-crash", _Payload, _crash, result={}),
    NodeType("t-echo", _Payload, _echo, result={}),
    NodeType("t-echo-inline", _Payload, _echo, result={}, inline=True),
    NodeType("t-fail-if", _FailIfPayload, _fail_if, result={}, inline=True),
)}
