"""Node types that exist only in tests, to drive the engine into every state.

They follow the node contract of ``app.nodes.base`` and are put into the
registry by the ``test_nodes`` fixture, so validation and the engine treat
them exactly like built-in types.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from app.logconfig import request_id
from app.nodes.base import Any_, Int, NodeError, PayloadSchema, Str


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


def _type(run, inline=False):
    return SimpleNamespace(Payload=_Payload, run=run, INLINE=inline)


TEST_TYPES = {
    "t-meet": _type(_meet),
    "t-signal": _type(_signal),
    "t-await": _type(_await),
    "t-fail": _type(_fail),
    "t-flaky": _type(_flaky),
    "t-hang": _type(_hang),
    "t-spin": _type(_spin),
    "t-spin-inline": _type(_spin, inline=True),
    "t-busy": _type(_busy),
    "t-big": _type(_big, inline=True),
    "t-crash": _type(_crash),
    "t-echo": _type(_echo),
    "t-echo-inline": _type(_echo, inline=True),
}
