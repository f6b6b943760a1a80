"""Running a checked ``Plan`` (SPEC §3): the design of scheduling.

One scheduling thread (the request's) owns every piece of run state. Handlers
run on pool threads and hand back ``(node_id, attempt, outcome)`` through a
queue; they never touch state and never raise across threads (the dask/local.py
model). The loop:

    start every ready node  →  wait for the next event  →  apply it  →  repeat

where an event is an outcome arriving, an attempt's time limit passing, a retry
timer firing, or the run deadline. Invariants:

- a node becomes *ready* when its last parent reaches a final state; it then
  runs or is skipped at once (``_settle``), so no node waits for a whole level;
- every ready node starts immediately: pooled handlers each get a thread of
  their own, and pure ``INLINE`` handlers run on this thread after the pooled
  ones have been started;
- the wait never extends past the earliest attempt limit or the run deadline,
  so a handler that never returns delays nothing: its attempt is failed with
  ``TIMEOUT`` when its limit passes and its late outcome is ignored;
- at the run deadline the response is built from the state as it stands.
"""
from __future__ import annotations

import functools
import heapq
import logging
import os
import queue
import threading
import time
from typing import Any

from marshmallow import ValidationError

from . import metrics
from .expressions import MISSING, Budget, ExpressionError, resolve
from .nodes.base import DEFAULT_MAX_TIMEOUT_MS, NodeContext, NodeError, iso, load
from .plan import Plan, PlanNode
from .pool import pool
from .schemas import flatten
from .scope import Scope
from .state import NodeState, node_view, skip_reason

log = logging.getLogger("app.engine")

NEVER_RETRIED = {"BLOCKED_DESTINATION"}
# A node's resolved input may be at most this large (characters of JSON): a short
# payload could otherwise copy a large result thousands of times into memory.
MAX_INPUT_CHARS = 4 * 1024 * 1024
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """``run_`` + a ULID in lowercase: 48 bits of milliseconds, then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "run_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class Run:
    """The state of one run; only the thread that calls ``execute`` mutates it."""

    def __init__(self, plan: Plan, run_id: str, settings: dict | None = None,
                 deadline_ms: int = 60_000):
        self.plan, self.run_id, self.settings = plan, run_id, settings or {}
        self.states = {node_id: NodeState() for node_id in plan.nodes}
        self.waiting = {n.id: len(n.parents) for n in plan.nodes.values()}
        self.outcomes: queue.SimpleQueue = queue.SimpleQueue()
        self.running: dict[str, tuple[int, float, threading.Event]] = {}
        self.timers: list[tuple[float, str]] = []  # (monotonic start time, node id)
        self.ready: list[str] = []
        self.started_at = time.time()
        self.deadline = time.monotonic() + (plan.timeout_ms or deadline_ms) / 1000
        self.timed_out = False
        self.scope = Scope(plan, run_id, self.states)

    # -- the loop ------------------------------------------------------------

    def execute(self) -> dict:
        """Run every node and return the response body of SPEC §1."""
        self._run_root()
        while self.ready or self.running or self.timers:
            if time.monotonic() >= self.deadline:
                self._hit_deadline()
                break
            if self.ready:
                self._start_ready()
                continue
            now = time.monotonic()
            self._wait(min([self.deadline] + [d for _, d, _ in self.running.values()]
                           + [t for t, _ in self.timers[:1]]) - now)
            self._expire(time.monotonic())
        return self._response()

    def _wait(self, seconds: float) -> None:
        """Apply the outcomes that arrive within ``seconds``, judged by when they ended."""
        try:
            item = self.outcomes.get(timeout=max(0.0, seconds))
        except queue.Empty:
            return
        while True:
            node_id, attempt, outcome, ended = item
            current = self.running.get(node_id)
            # An outcome of an attempt already given up is ignored; one that ended
            # after the run deadline is left for _hit_deadline (the run timed out,
            # however soon after the handler returned), and one that ended after its
            # attempt's limit is that attempt's TIMEOUT.
            if current is not None and current[0] == attempt and ended < self.deadline:
                del self.running[node_id]
                if ended >= current[1]:
                    outcome = self._timeout_error(node_id, current[1])
                self._finish_attempt(node_id, outcome)
            try:
                item = self.outcomes.get_nowait()
            except queue.Empty:
                return

    def _expire(self, now: float) -> None:
        for node_id, (_, limit, cancelled) in list(self.running.items()):
            if now >= limit and now < self.deadline:
                cancelled.set()
                del self.running[node_id]
                self._finish_attempt(node_id, self._timeout_error(node_id, limit))
        while self.timers and self.timers[0][0] <= now:
            _, node_id = heapq.heappop(self.timers)
            self.ready.append(node_id)

    def _timeout_error(self, node_id: str, limit: float) -> NodeError:
        ms = round((limit - self.states[node_id].attempt_started) * 1000)
        return NodeError("TIMEOUT", f"The attempt exceeded its time limit of {ms} ms.", True)

    # -- starting nodes ------------------------------------------------------

    def _run_root(self) -> None:
        state = self.states["root"]
        state.started = state.finished = time.time()
        root_payload = resolve(self.plan.nodes["root"].payload, self.scope.lookup)
        state.result = {**root_payload, **self.plan.payload, "triggeredAt": iso(state.started)}
        state.status = "success"
        self._settle_children("root")

    def _start_ready(self) -> None:
        inline = []
        while self.ready:
            node_id = self.ready.pop(0)
            started = self._start_attempt(node_id)
            if started is not None:
                inline.append(started)
        for node_id, data, ctx in inline:
            self._finish_attempt(node_id, _call(self.plan.nodes[node_id], data, ctx))

    def _start_attempt(self, node_id: str):
        """Resolve and check the input, then hand the handler to the pool.

        Returns ``(node_id, data, ctx)`` for an inline handler, to be run by
        the caller once every pooled handler of this round has started.
        """
        node, state = self.plan.nodes[node_id], self.states[node_id]
        state.begin_attempt(time.time(), time.monotonic())
        try:
            state.input = resolve(node.payload, self.scope.lookup, Budget(MAX_INPUT_CHARS))
            data = load(node.module.Payload, state.input)
        except ExpressionError as error:
            state.input = MISSING  # never shown: it may be what was too large
            self._finish_attempt(node_id, NodeError("INVALID_INPUT", str(error)))
            return None
        except ValidationError as error:
            messages = "; ".join(f"{k or 'payload'}: {' '.join(v)}"
                                 for k, v in flatten(error.messages).items())
            self._finish_attempt(node_id, NodeError("INVALID_INPUT", messages))
            return None
        # Exactly the run deadline when that comes first, so the deadline (not the
        # attempt's limit a few microseconds before it) decides: RUN_TIMEOUT.
        limit = min(self.deadline, time.monotonic() + self._limit_ms(node, data) / 1000)
        inline = _runs_inline(node.module, data)
        ctx = NodeContext(run_id=self.run_id, node_id=node_id, deadline=limit,
                          # an inline handler cannot be interrupted: no event to build
                          cancelled=_NEVER_CANCELLED if inline else threading.Event(),
                          settings=self.settings, resolve=self.scope.resolve_key,
                          logger=_node_logger(node.type))
        if inline:
            return node_id, data, ctx
        self.running[node_id] = (state.attempts, limit, ctx.cancelled)
        pool().submit(_run_pooled, node, data, ctx, state.attempts, self.outcomes)
        return None

    def _limit_ms(self, node: PlanNode, data: dict) -> float:
        """The smallest of the node's, the payload's and the type's limits (the run's
        deadline is applied by the caller)."""
        module = node.module
        limits = [getattr(module, "MAX_TIMEOUT_MS", DEFAULT_MAX_TIMEOUT_MS)]
        if node.timeout_ms:
            limits.append(node.timeout_ms)
        own = getattr(module, "TIMEOUT_FIELD", None)
        if own and isinstance(data.get(own), (int, float)):
            limits.append(data[own])
        return max(0.0, min(limits))

    # -- finishing nodes -----------------------------------------------------

    def _finish_attempt(self, node_id: str, outcome: Any) -> None:
        node, state = self.plan.nodes[node_id], self.states[node_id]
        state.finished = time.time()
        if not isinstance(outcome, NodeError):
            state.status, state.result, state.error = "success", outcome, None
            self._settle_children(node_id)
            return
        state.error = outcome.as_dict()
        if outcome.code == "BLOCKED_DESTINATION":
            metrics.BLOCKED.inc()
        start_at = self._next_attempt_at(node, state, outcome)
        if start_at is not None:
            heapq.heappush(self.timers, (start_at, node_id))
            return
        state.status = "failure"
        self._settle_children(node_id)

    def _next_attempt_at(self, node: PlanNode, state: NodeState, error: NodeError):
        """When to retry (monotonic), or None when the node fails now."""
        retry = node.retry
        if not retry or state.attempts >= retry["maxAttempts"] or error.code in NEVER_RETRIED:
            return None
        retry_on = retry.get("retryOn")
        if not (error.code in retry_on if retry_on is not None else error.retryable):
            return None
        wait_ms = min(retry["initialDelayMs"] * retry["backoffRate"] ** (state.attempts - 1),
                      retry["maxDelayMs"])
        start_at = time.monotonic() + wait_ms / 1000
        return start_at if start_at < self.deadline else None

    def _settle_children(self, node_id: str) -> None:
        """Each child whose parents are now all final runs or is skipped, recursively."""
        todo = [node_id]
        while todo:
            parent = self.plan.nodes[todo.pop()]
            for child_id in parent.children:
                self.waiting[child_id] -= 1
                if self.waiting[child_id]:
                    continue
                child = self.plan.nodes[child_id]
                reason = skip_reason(child, self.plan.nodes, self.states)
                if reason is None:
                    self.ready.append(child_id)
                else:
                    self.states[child_id].skip(reason)
                    todo.append(child_id)

    def _hit_deadline(self) -> None:
        self.timed_out = True
        now = time.time()
        for node_id, state in self.states.items():
            if node_id in self.running:
                self.running[node_id][2].set()
                state.status, state.finished = "failure", now
                state.error = NodeError("TIMEOUT", "The run deadline passed.", True).as_dict()
            elif state.status == "running":  # between attempts: fails with its last error
                state.status = "failure"
            elif state.status == "pending":
                state.skip("run_timeout")
        self.running.clear()
        self.timers.clear()

    # -- the response ----------------------------------------------------------

    def _response(self) -> dict:
        execution = {node_id: node_view(node, self.states[node_id])
                     for node_id, node in self.plan.nodes.items()}
        failed = [n for n, s in self.states.items()
                  if s.status == "failure" and not self.plan.nodes[n].continue_on_error]
        if self.timed_out:
            error = {"code": "RUN_TIMEOUT", "message": "The run deadline passed."}
        elif failed:
            first = min(failed, key=lambda n: self.states[n].finished)
            others = [n for n in failed if n != first]
            message = f"Node {first!r} failed: {self.states[first].error['message']}"
            if others:
                message += " Also failed: " + ", ".join(repr(n) for n in others) + "."
            error = {"code": "NODE_FAILED", "message": message}
        else:
            error = None
        return {
            "runId": self.run_id,
            "status": "failure" if error else "success",
            "durationMs": round((time.time() - self.started_at) * 1000),
            "totalCu": sum(s.attempts for n, s in self.states.items() if n != "root"),
            "error": error,
            "executionState": execution,
        }


_NEVER_CANCELLED = threading.Event()


def _runs_inline(module, data: dict) -> bool:
    """``INLINE`` types always; types with ``inline(data)`` when it says so (small inputs)."""
    if getattr(module, "INLINE", False):
        return True
    small = getattr(module, "inline", None)
    return small is not None and small(data)


@functools.cache
def _node_logger(node_type: str) -> logging.Logger:
    return logging.getLogger(f"app.nodes.{node_type}")


def _call(node: PlanNode, data: dict, ctx: NodeContext) -> Any:
    """A handler's outcome as a value: its result, or a ``NodeError``."""
    try:
        result = node.module.run(data, ctx)
    except NodeError as error:
        return error
    except Exception:  # a bug in a handler must not become a 500 or a traceback
        log.exception("node handler raised", extra={"runId": ctx.run_id, "nodeId": ctx.node_id})
        return NodeError("INTERNAL", f"Node type {node.type!r} failed unexpectedly.")
    if ctx.cancelled.is_set():
        return NodeError("TIMEOUT", "The attempt exceeded its time limit.", True)
    return result


def _run_pooled(node: PlanNode, data: dict, ctx: NodeContext, attempt: int,
                outcomes: queue.SimpleQueue) -> None:
    outcome = _call(node, data, ctx)
    outcomes.put((node.id, attempt, outcome, time.monotonic()))
