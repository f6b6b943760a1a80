"""Running a checked ``RunRequest`` (SPEC §3): the design of scheduling.

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
  their own, and pure ``inline`` handlers run on this thread after the pooled
  ones have been started;
- the wait never extends past the earliest attempt limit or the run deadline,
  so a handler that never returns delays nothing: its attempt is failed with
  ``TIMEOUT`` when its limit passes and its late outcome is ignored;
- at the run deadline the response is built from the state as it stands.
"""
from __future__ import annotations

import heapq
import queue
import time
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError

from . import config, metrics
from .attempts import call, condition_keys, limit_ms, node_logger, retry_wait_ms, run_pooled, until
from .dialect import flatten, load
from .expressions import MISSING, Budget, ExpressionError, resolve
from .jstext import iso
from .nodes.base import Cancel, NodeContext, NodeError
from .plan import RunRequest
from .pool import pool
from .redact import Redactor
from .scope import Scope
from .state import NodeState, Outcome, RunBody, dumps, skip_reason, summary


class Run:
    """The state of one run; only the thread that calls ``run`` mutates it."""

    def __init__(self, request: RunRequest, run_id: str, settings: dict | None = None,
                 deadline_ms: int = 60_000, redactor: Redactor | None = None,
                 on_progress: Callable[[int], None] | None = None,
                 started: float | None = None):
        plan = request.plan
        self.request, self.plan, self.run_id = request, plan, run_id
        self.settings = settings or {}
        self.redactor = redactor or Redactor()
        # Told the started attempts before attempts that can act outside the process
        # start, so a worker killed mid-run is still charged for them (SPEC §3).
        self.on_progress = on_progress
        self.states = {node_id: NodeState() for node_id in plan.nodes}
        self.waiting = {n.id: len(n.parents) for n in plan.nodes.values()}
        self.outcomes: queue.SimpleQueue = queue.SimpleQueue()
        self.running: dict[str, tuple[int, float, Cancel]] = {}
        self.timers: list[tuple[float, str]] = []  # (monotonic start time, node id)
        self.ready: list[str] = []
        # The run's clock starts when its request was read (``started``, monotonic), so
        # the time spent validating and reserving counts against its deadline too.
        now = time.monotonic()
        started = now if started is None else min(started, now)
        self.started_at = time.time() - (now - started)
        self.deadline = started + (request.timeout_ms or deadline_ms) / 1000
        self.timed_out = False
        # SPEC §3's size limits, in characters of JSON: a node's resolved input,
        # condition keys included (a short payload could otherwise copy a large result
        # thousands of times into memory); a node's result; the run's whole answer.
        self.max_input, self.max_result, max_run = (
            self.settings.get(name, config.default(name))
            for name in ("MAX_INPUT_CHARS", "MAX_RESULT_CHARS", "MAX_RUN_CHARS"))
        self.body = RunBody(max_run)
        self.scope = Scope(request, run_id, self.states)

    @property
    def started_attempts(self) -> int:
        """What the attempts started so far cost: what the run is charged (SPEC §8)."""
        nodes = self.plan.nodes
        return sum(s.attempts * nodes[n].node_type.cu_per_attempt
                   for n, s in self.states.items() if s.attempts)

    # -- the loop ------------------------------------------------------------

    def execute(self) -> dict:
        """Run every node and return the response body of SPEC §1 as a value."""
        return self.run().body()

    def run(self) -> Outcome:
        """Run every node; the response body of SPEC §1 as text, and its summary."""
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
        return self._outcome()

    def _wait(self, seconds: float) -> None:
        """Apply the outcomes that arrive within ``seconds``, judged by when they ended."""
        try:
            item = self.outcomes.get(timeout=max(0.0, seconds))
        except queue.Empty:
            return
        while True:
            node_id, attempt, outcome, text, ended = item
            current = self.running.get(node_id)
            # An outcome of an attempt already given up is ignored; one that ended
            # after the run deadline is left for _hit_deadline (the run timed out,
            # however soon after the handler returned), and one that ended after its
            # attempt's limit is that attempt's TIMEOUT.
            if current is not None and current[0] == attempt and ended < self.deadline:
                del self.running[node_id]
                if ended >= current[1]:
                    outcome = self._timeout_error(node_id, current[1])
                self._finish_attempt(node_id, outcome, text)
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
        state.result = {**root_payload, **self.request.payload,
                        "triggeredAt": iso(state.started)}
        state.status = "success"
        try:
            state.result_text = self._text(state.result, until(self.deadline))
        except NodeError:  # the deadline passed already: the payload is not shown
            state.result_text = None
        self._settled("root")
        self._settle_children("root")

    def _start_ready(self) -> None:
        pooled, inline = [], []
        while self.ready:
            node_id = self.ready.pop(0)
            started = self._start_attempt(node_id)
            if started is not None:
                (inline if started[2].cancelled is _NEVER_CANCELLED else pooled).append(started)
        if pooled:
            if self.on_progress is not None:
                self.on_progress(self.started_attempts)
            for node_id, data, ctx in pooled:
                node = self.plan.nodes[node_id]
                pool().submit(run_pooled, node, data, ctx, self.states[node_id].attempts,
                              self.outcomes, self._result_text, cancelled=ctx.cancelled)
        for node_id, data, ctx in inline:
            if time.monotonic() < self.deadline:
                outcome, text = call(self.plan.nodes[node_id], data, ctx, self._result_text)
                if time.monotonic() < self.deadline:
                    self._finish_attempt(node_id, outcome, text)
                    continue
            # Started, but the run deadline came first: _hit_deadline judges it, as it
            # judges a pooled handler whose outcome ended past the deadline.
            self.running[node_id] = (self.states[node_id].attempts, self.deadline, Cancel())

    def _start_attempt(self, node_id: str):
        """Resolve and check the input; ``(node_id, data, ctx)`` for the caller to run
        (pooled handlers first, then inline ones on this thread), or None."""
        node, state = self.plan.nodes[node_id], self.states[node_id]
        state.begin_attempt(time.time(), time.monotonic())
        check = until(self.deadline)
        state.input, state.input_text = MISSING, None  # shown only once resolved in full
        try:
            budget = Budget(self.max_input, check)
            value = resolve(node.payload, self.scope.lookup, budget)
            state.input_text, state.input = self._text(value, check), value
            data = load(node.node_type.payload, state.input)
            keys = condition_keys(node, data, self.scope.resolve_key, budget)
        except ExpressionError as error:
            self._finish_attempt(node_id, NodeError("INVALID_INPUT", str(error)))
            return None
        except ValidationError as error:
            messages = "; ".join(f"{k or 'payload'}: {' '.join(v)}"
                                 for k, v in flatten(error.messages).items())
            self._finish_attempt(node_id, NodeError("INVALID_INPUT", messages))
            return None
        except NodeError as error:  # the deadline passed while resolving
            self._finish_attempt(node_id, error)
            return None
        # Exactly the run deadline when that comes first, so the deadline (not the
        # attempt's limit a few microseconds before it) decides: RUN_TIMEOUT.
        limit = min(self.deadline, time.monotonic() + limit_ms(node, data) / 1000)
        inline = node.node_type.runs_inline(data)
        ctx = NodeContext(run_id=self.run_id, node_id=node_id, deadline=limit,
                          # an inline handler is bounded by ctx.check() against its limit
                          cancelled=_NEVER_CANCELLED if inline else Cancel(),
                          settings=self.settings, resolve=keys,
                          logger=node_logger(node.type))
        if not inline:
            self.running[node_id] = (state.attempts, limit, ctx.cancelled)
        return node_id, data, ctx

    # -- what leaves the process ---------------------------------------------

    def _text(self, value: Any, check: Callable[[], None]) -> str:
        """``value`` redacted and written as JSON; ``check`` stops the walk in time."""
        return dumps(self.redactor.value(value, check))

    def _result_text(self, result: Any, check: Callable[[], None]) -> str:
        """A result as it leaves the process; OUTPUT_TOO_LARGE past the cap (SPEC §3)."""
        try:
            text = self._text(result, check)
        except (ValueError, TypeError, RecursionError):
            raise NodeError("INTERNAL", "The node's result is not a JSON value.") from None
        if len(text) > self.max_result:
            raise NodeError("OUTPUT_TOO_LARGE", f"The result is {len(text)} characters of "
                            f"JSON; the limit is {self.max_result}.")
        return text

    # -- finishing nodes -----------------------------------------------------

    def _finish_attempt(self, node_id: str, outcome: Any, text: str | None = None) -> None:
        node, state = self.plan.nodes[node_id], self.states[node_id]
        state.finished = time.time()
        if not isinstance(outcome, NodeError):
            state.status, state.result, state.error = "success", outcome, None
            state.result_text = text
            self._settled(node_id)
            self._settle_children(node_id)
            return
        error = outcome.as_dict()
        error["message"] = self.redactor.text(error["message"])
        state.error = error
        if outcome.code == "BLOCKED_DESTINATION":
            metrics.BLOCKED.inc()
        wait_ms = retry_wait_ms(node, state.attempts, outcome)
        start_at = None if wait_ms is None else time.monotonic() + wait_ms / 1000
        if start_at is not None and start_at < self.deadline:
            heapq.heappush(self.timers, (start_at, node_id))
            return
        state.status = "failure"
        self._settled(node_id)
        self._settle_children(node_id)

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
                    self._settled(child_id)
                    todo.append(child_id)

    def _settled(self, node_id: str) -> None:
        """A node is final: its entry is written now, within the run's size cap."""
        self.body.settle(self.plan.nodes[node_id], self.states[node_id])

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
            else:
                continue
            self._settled(node_id)
        self.running.clear()
        self.timers.clear()

    # -- the response ----------------------------------------------------------

    def _outcome(self) -> Outcome:
        failed = [n for n, s in self.states.items()
                  if s.status == "failure" and not self.plan.nodes[n].continue_on_error]
        if self.timed_out:
            error = {"code": "RUN_TIMEOUT", "message": "The run deadline passed."}
        elif self.body.too_large:
            error = {"code": "RUN_TOO_LARGE", "message": (
                f"The run's answer reached its limit of {self.body.max_chars} characters; the "
                "results that did not fit were left out.")}
        elif failed:
            first = min(failed, key=lambda n: self.states[n].finished)
            others = [n for n in failed if n != first]
            message = f"Node {first!r} failed: {self.states[first].error['message']}"
            if others:
                message += " Also failed: " + ", ".join(repr(n) for n in others) + "."
            error = {"code": "NODE_FAILED", "message": message}
        else:
            error = None
        duration_ms = round((time.time() - self.started_at) * 1000)
        status, total_cu = "failure" if error else "success", self.started_attempts
        text = self.body.text(summary(self.run_id, status, duration_ms, total_cu, error),
                              self.plan.nodes)
        return Outcome(text, status, total_cu, duration_ms, error,
                       [(node.type, self.states[n].status) for n, node in self.plan.nodes.items()])


_NEVER_CANCELLED = Cancel()
