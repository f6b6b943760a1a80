"""Running a checked ``RunRequest`` (SPEC §3): the design of scheduling.

One scheduling thread (the request's) drives the run, and only the thread that
holds the run's ``lock`` touches its state: the scheduling thread holds it except
while it waits. Handlers run on pool threads and never raise across threads (the
dask/local.py model); a handler's thread hands back ``(node_id, attempt, outcome)``
through a queue, or, when the scheduling thread is waiting (the lock is free), does
its work in its place: applies the outcome, starts what became ready and runs one
ready pooled node itself, so a chain of pooled nodes pays no hand-off between
threads per node (``_ended_on_pool``). The loop:

    start every ready node  →  wait for the next event  →  apply it  →  repeat

where an event is an outcome arriving, an attempt's time limit passing, a retry
timer firing, or the run deadline. Invariants:

- a node becomes *ready* when its last parent reaches a final state; it then
  runs or is skipped at once (``_settle``), so no node waits for a whole level;
- every ready node starts immediately: pooled handlers each get a thread of
  their own (a pool thread that started them keeps one for itself), and pure
  ``inline`` handlers run on the thread that holds the lock after the pooled
  ones have been started (within a run's bounds, which only loops reach: at
  most ``MAX_POOLED`` attempts on pool threads, ``PREPARED_CHARS`` of inputs
  prepared in one pass; see ``_start_ready``);
- the wait never extends past the earliest attempt limit or the run's stop (a
  pool thread that starts an attempt with an earlier limit wakes it), so a
  handler that never returns delays nothing: its attempt is failed with
  ``TIMEOUT`` when its limit passes and its late outcome is ignored;
- the run stops at its deadline (earlier by the time a large answer takes to be
  stored and sent: ``stop_at``) and the response is built from the state as it
  stands; so it is when the run is cancelled (SPEC §12), which ``tick`` reports:
  the caller's look at the world (partial state written, a cancel asked for)
  every ``TICK_S`` while the run lasts — a run shorter than that is never
  interrupted for it.

A caller that streams the run (SPEC §12) drives the loop itself (``passes``) and,
whenever it pauses (before it waits, and every ``PAUSE_S`` of work without a wait),
writes the events gathered in ``events`` so far: ``node.started``, ``node.retrying``
and ``node.finished`` (the node's entry of the answer, redacted), as JSON text.

State is kept per *instance*: a node outside loops is one instance named by its
id; a ``for-each`` node (SPEC §11) runs its body once per item, each body node
in iteration i an instance ``"<id>[i]"`` (nested: ``"[i][j]"``) in that
iteration's ``Frame``, scheduled like any other, so iterations and the rest of
the graph run side by side under the same rules and the same deadline. The
loop's books (which iteration may start, what each produced) are a ``Loop``
(app/loops.py); when its last iteration ends the loop node finishes.
"""
from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from marshmallow import ValidationError

from . import config, metrics
from .attempts import NEVER_CANCELLED as _NEVER_CANCELLED
from .attempts import call, condition_keys, limit_ms, retry_wait_ms, run_pooled, until
from .dialect import flatten
from .expressions import MISSING, Budget, ExpressionError, resolve
from .jstext import iso
from .loops import MAX_INSTANCES, Frame, Loop
from .nodes.base import Cancel, NodeContext, NodeError
from .plan import PlanNode, RunRequest
from .pool import pool
from .redact import Redactor
from .scope import Scope
from .state import NodeState, Outcome, RunBody, dumps, node_view_text, skip_reason, summary

NAMED = 20  # failed nodes named in a failed run's message
PREPARED_CHARS = 16 * 1024 * 1024  # resolved inputs (as JSON) waiting in one pass, at most
HELD_CHARS = 64 * 1024 * 1024  # inputs and results held by loop iterations in flight
# Attempts of one run on pool threads at once: outside loops a run has fewer nodes;
# nested loops could make 1,700 ready together (deploy/runner.service's TasksMax).
MAX_POOLED = 64
TICK_S = 0.5  # how often a run in flight calls ``tick`` (after its first TICK_S)
PAUSE_S = 0.05  # a run busy without waiting pauses (for its stream) at least this often
PARTIAL_FULL_CHARS = 1024 * 1024  # a partial state with inputs and results, at most
STREAM_FULL_CHARS = 1024 * 1024  # node.finished events with inputs and results, at most
STOPS = {  # why a run stopped before its end → its error, and why nodes not started skip
    "run_timeout": ("RUN_TIMEOUT", "The run deadline passed."),
    "cancelled": ("CANCELLED", "The run was cancelled."),
}


class Run:
    """The state of one run; only the thread that holds its ``lock`` mutates it."""

    def __init__(self, request: RunRequest, run_id: str, settings: dict | None = None,
                 deadline_ms: int = 60_000, redactor: Redactor | None = None,
                 on_progress: Callable[[int], None] | None = None,
                 started: float | None = None,
                 reserve: Callable[[int], bool] | None = None,
                 tick: Callable[[Run], bool] | None = None, stream: bool = False,
                 books_s_per_char: float = 0.0):
        plan = request.plan
        self.request, self.plan, self.run_id = request, plan, run_id
        self.settings = settings or {}
        self.redactor = redactor or Redactor()
        # Told the started attempts before attempts that can act outside the process
        # start, so a worker killed mid-run is still charged for them (SPEC §3).
        self.on_progress = on_progress
        # Asked for more CU when a loop starts (its items' worst case, SPEC §11): False
        # when the token's balance cannot cover it.
        self.reserve = reserve or (lambda cu: True)
        # Called every TICK_S while the run lasts; True: the run is cancelled.
        self.tick = tick
        # The events of the pass, as (name, JSON text), when the run is streamed.
        self.events: list[tuple[str, str]] | None = [] if stream else None
        self.streamed_chars = 0  # of the entries in node.finished events so far
        self.changes = 0  # attempts started, retries and entries written so far
        # Per instance (see the module docstring): its node, state, parents still running,
        # and for a body instance its iteration.
        self.nodes = dict(plan.top_nodes)
        self.states = {node_id: NodeState() for node_id in plan.top}
        self.waiting = dict(plan.parent_counts)
        self.frames: dict[str, Frame] = {}
        self.loops: dict[str, Loop] = {}  # the running for-each instances
        self.instances = 0  # body instances the loops have made room for (MAX_INSTANCES)
        self.started_cu = 0  # what the attempts started so far cost (counted as they start)
        self.open_loops = 0  # loops started and not finished
        self.held = 0  # characters of the inputs and results iterations in flight hold
        # Outcomes for the scheduling thread, and None: "look again" (_ended_on_pool).
        self.outcomes: queue.SimpleQueue = queue.SimpleQueue()
        # Held by the thread that touches the state: the scheduling thread, except while
        # it waits (until ``wake_at``, monotonic), and for good once the run has ended.
        self.lock = threading.Lock()
        self.wake_at = 0.0
        self.ended = False  # passes() is over: pool threads leave the state alone
        self.failed: BaseException | None = None  # raised on a pool thread, for passes()
        self.running: dict[str, tuple[int, float, Cancel]] = {}
        self.timers: list[tuple[float, str]] = []  # (monotonic start time, node id)
        self.ready: list[str] = []
        # The run's clock starts when its request was read (``started``, monotonic), so
        # the time spent validating and reserving counts against its deadline too.
        now = time.monotonic()
        if started is None or started > now:
            started = now
        self.started_at = time.time() - (now - started)
        # A monotonic reading plus this is epoch seconds: one reading of the clock serves
        # an attempt's start (or end) and its deadline check, and a run's times all come
        # from one clock (a step of the wall clock mid-run bends none of them).
        self.epoch_offset = self.started_at - started
        self.began = started  # monotonic
        self.deadline = started + (request.timeout_ms or deadline_ms) / 1000
        # How long the caller's books take per character of the answer, after the run
        # stops (the store's ``books_s_per_char``): the run stops that much earlier.
        self.books_s_per_char = books_s_per_char
        self.check = until(self.deadline)  # raises TIMEOUT once the deadline has passed
        self.stopped: str | None = None  # a key of STOPS once the run stopped early
        # SPEC §3's size limits, in characters of JSON: a node's resolved input,
        # condition keys included (a short payload could otherwise copy a large result
        # thousands of times into memory); a node's result; the run's whole answer.
        self.max_input = self._setting("MAX_INPUT_CHARS")
        self.max_result = self._setting("MAX_RESULT_CHARS")
        self.body = RunBody(self._setting("MAX_RUN_CHARS"))
        self.scope = Scope(request, run_id, self.states)
        # The JSON sizes of values read by the inputs of nodes outside loops (see Budget):
        # several nodes reading one result measure it once. (Loop iterations measure
        # theirs apart: what they read is let go when the iteration ends.)
        self.sizes: dict[int, tuple[int, Any]] = {}

    def _setting(self, name: str) -> Any:
        settings = self.settings
        return settings[name] if name in settings else config.default(name)

    @property
    def started_attempts(self) -> int:
        """What the attempts started so far cost: what the run is charged (SPEC §8)."""
        return self.started_cu

    # -- the loop ------------------------------------------------------------

    def execute(self) -> dict:
        """Run every node and return the response body of SPEC §1 as a value."""
        return self.run().body()

    def run(self) -> Outcome:
        """Run every node; the response body of SPEC §1 as text, and its summary."""
        for _ in self.passes():
            pass
        return self.outcome()

    def passes(self) -> Iterator[bool]:
        """The scheduling loop, pausing whenever it is about to wait (a streaming caller
        writes the ``events`` so far meanwhile), and at least every ``PAUSE_S`` while it
        has work to do without waiting; ``outcome`` once it is exhausted. Each pause
        yields whether the loop is over: its last pause, at its end (a run that never
        waits — inline nodes only — pauses only then: one write of its events).
        The run's ``lock`` is held throughout (pauses included), but for the waits, and
        is kept once it is over (however it ended): late outcomes then only queue up."""
        self.lock.acquire()
        try:
            self._run_root()
            paused = time.monotonic()
            next_tick = paused + TICK_S
            while self.ready or self.running or self.timers or self.open_loops:
                now = time.monotonic()
                stop_at = self.stop_at()
                if now >= stop_at:
                    self._stop("run_timeout")
                    break
                if self.tick is not None and now >= next_tick:
                    next_tick = now + TICK_S
                    if self.tick(self):
                        self._stop("cancelled")
                        break
                    now = time.monotonic()  # the tick may have taken a while
                if self.ready and self._start_ready(now=now):
                    if now - paused >= PAUSE_S:
                        yield False
                        paused = time.monotonic()
                    continue
                yield False
                paused = time.monotonic()
                wake = [stop_at] + [d for _, d, _ in self.running.values()] + \
                    [t for t, _ in self.timers[:1]]
                if self.tick is not None:
                    wake.append(next_tick)
                self._wait(min(wake))
                self._expire(time.monotonic())
            yield True
        finally:
            self.ended = True

    def stop_at(self) -> float:
        """When the run stops at the latest (monotonic): its deadline, less the time its
        answer so far will take to be stored and sent (``books_s_per_char``)."""
        return self.deadline - self.body.size * self.books_s_per_char

    def _emit(self, name: str, data: str) -> None:
        """An event for the stream (callers check that the run is streamed: the text of
        an event is made only then)."""
        self.events.append((name, data))

    def _wait(self, wake_at: float) -> None:
        """Apply the outcomes that arrive until ``wake_at`` (monotonic), judged by when
        they ended; meanwhile pool threads may work on the run (the lock is theirs)."""
        self.wake_at, item = wake_at, None
        self.lock.release()
        try:
            item = self.outcomes.get(timeout=max(0.0, wake_at - time.monotonic()))
        except queue.Empty:
            pass
        finally:
            self.lock.acquire()
        while True:
            if self.failed is not None:  # a pool thread doing this thread's work raised
                raise self.failed
            if item is not None:
                self._apply(*item)
            try:
                item = self.outcomes.get_nowait()
            except queue.Empty:
                return

    def _apply(self, node_id: str, attempt: int, outcome: Any, text: str | None,
               ended: float) -> None:
        """A pooled attempt's outcome. One of an attempt already given up is ignored;
        one that ended after the run deadline is left for _stop (the run timed out,
        however soon after the handler returned), and one that ended after its
        attempt's limit is that attempt's TIMEOUT."""
        current = self.running.get(node_id)
        if current is not None and current[0] == attempt and ended < self.deadline:
            del self.running[node_id]
            if not current[2].is_set() and len(_spare_flags) < MAX_POOLED:
                _spare_flags.append(current[2])  # no handler looks at it again
            if ended >= current[1]:
                outcome = self._timeout_error(node_id, current[1])
            self._finish_attempt(node_id, outcome, text)

    def _ended_on_pool(self, node_id: str, attempt: int, outcome: Any, text: str | None,
                       ended: float) -> tuple | None:
        """A pooled attempt ended, on its pool thread (``run_pooled``). While the
        scheduling thread waits, this thread does its work: applies the outcome and
        starts what became ready, keeping one pooled attempt to run itself (returned:
        the pool's next task for this thread); it wakes the scheduling thread only when
        that must look again — the run is over, a stream has events to write, nodes
        still wait to start, or an attempt's limit or a retry comes before its wake.
        Else (the scheduling thread is busy, or the run has ended) the outcome is queued
        for it. The lock is never waited for here: a pool thread never blocks on a run.
        What this work raises (the store away, a bug) is the scheduling thread's to
        raise, as if it had done the work itself."""
        if not self.lock.acquire(blocking=False):
            self.outcomes.put((node_id, attempt, outcome, text, ended))
            return None
        keep: list = []
        try:
            if self.ended or self.failed is not None:
                self.outcomes.put((node_id, attempt, outcome, text, ended))
                return None
            self._apply(node_id, attempt, outcome, text, ended)
            began = time.monotonic()
            # Passes until one keeps a pooled attempt here (inline nodes run on this
            # thread meanwhile), for at most PAUSE_S: a stream waits for no longer.
            while self.ready and not keep and time.monotonic() - began < PAUSE_S:
                if not self._start_ready(keep):
                    break
            earliest = min([d for _, d, _ in self.running.values()] +
                           [t for t, _ in self.timers[:1]], default=self.deadline)
            if self.events or self.ready or earliest < self.wake_at or \
                    not (self.running or self.timers or self.open_loops):
                self.outcomes.put(None)
        except BaseException as error:
            self.failed = error
            keep.clear()
            self.outcomes.put(None)
        finally:
            self.lock.release()
        if not keep:
            return None
        node_id, data, ctx = keep[0]
        return run_pooled, (self.nodes[node_id], data, ctx, self.states[node_id].attempts,
                            self._ended_on_pool, self._result_text), ctx.cancelled

    def _expire(self, now: float) -> None:
        stop_at = self.stop_at()
        for node_id, (_, limit, cancelled) in list(self.running.items()):
            if now >= limit and now < stop_at:  # else the run stops: RUN_TIMEOUT
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
        state.started = state.finished = time.monotonic() + self.epoch_offset
        payload = self.nodes["root"].payload
        root_payload = resolve(payload, self.scope.lookup) if payload else {}
        state.result = {**root_payload, **self.request.payload,
                        "triggeredAt": iso(state.started)}
        state.status = "success"
        try:
            state.result_text = self._text(state.result, self.check)
        except NodeError:  # the deadline passed already: the payload is not shown
            state.result_text = None
        self._settled("root")
        self._settle_children("root")

    def _start_ready(self, keep: list | None = None, now: float | None = None) -> bool:
        """Start the ready nodes: pooled handlers first, then inline ones on this thread;
        given ``keep`` (on a pool thread), one pooled attempt goes there, for this
        thread to run, instead of to the pool — only when no inline node is to run
        first, so it does not wait for them.

        Nothing starts once the run deadline has passed (those nodes are skipped, and
        cost nothing). Resolved inputs wait here until their handler runs, so a pass
        takes ready nodes only until their inputs add up to ``PREPARED_CHARS`` (a loop
        can make hundreds ready at once); the rest wait for the next pass. At most
        ``MAX_POOLED`` attempts of a run hold a pool thread at once: nodes that may need
        one wait for a running attempt to end (only loops make that many ready).
        False when every ready node waits so. ``now``: the caller's reading of the
        clock (monotonic), taken just before, serves the first deadline check.
        """
        pooled, inline, prepared, waiting, taken = [], [], 0, None, 0
        ready, stop_at = self.ready, self.stop_at()
        while ready and prepared < PREPARED_CHARS:
            if now is None:
                now = time.monotonic()  # the deadline's check, and the attempt's start
            if now >= stop_at:
                break
            node_id = ready.pop(0)
            # (A pooled attempt is in self.running from its start.)
            if not self.nodes[node_id].always_inline and len(self.running) >= MAX_POOLED:
                if waiting is None:
                    waiting = []
                waiting.append(node_id)
                continue
            taken += 1
            started = self._start_attempt(node_id, now)
            now = None
            if started is not None:
                (inline if started[2].cancelled is _NEVER_CANCELLED else pooled).append(started)
                prepared += len(self.states[node_id].input_text or "")
        if pooled:
            if self.on_progress is not None:
                self.on_progress(self.started_attempts)
            if keep is not None and not inline:
                keep.append(pooled.pop())
            submit = pool().submit
            for node_id, data, ctx in pooled:
                submit(run_pooled, self.nodes[node_id], data, ctx,
                       self.states[node_id].attempts, self._ended_on_pool, self._result_text,
                       cancelled=ctx.cancelled)
        for node_id, data, ctx in inline:
            stop_at = self.stop_at()  # each inline node's entry adds to the answer
            if time.monotonic() < stop_at:
                outcome, text = call(self.nodes[node_id], data, ctx, self._result_text)
                ended = time.monotonic()
                if ended < stop_at:
                    self._finish_attempt(node_id, outcome, text, ended)
                    continue
            # Started, but the run's stop came first: _stop judges it, as it
            # judges a pooled handler whose outcome ended past the deadline.
            self.running[node_id] = (self.states[node_id].attempts, stop_at, Cancel())
        if waiting is not None:
            ready[:0] = waiting
        return taken > 0

    def _start_attempt(self, node_id: str, now: float):
        """Resolve and check the input of an attempt starting ``now`` (monotonic);
        ``(node_id, data, ctx)`` for the caller to run (pooled handlers first, then
        inline ones on this thread), or None."""
        node, state = self.nodes[node_id], self.states[node_id]
        frame = self.frames.get(node_id)
        epoch = now + self.epoch_offset
        state.begin_attempt(epoch, now)
        self.started_cu += node.node_type.cu_per_attempt
        self.changes += 1
        if self.events is not None:
            self._emit("node.started", f'{{"nodeId":"{node_id}","attempt":{state.attempts},'
                       f'"startedAt":"{iso(epoch)}"}}')
        check = self.check
        state.input, state.input_text = MISSING, None  # shown only once resolved in full
        try:
            budget = Budget(self.max_input, check, self.sizes if frame is None else None)
            value = node.resolve_input(
                self.scope.lookup if frame is None else self.scope.lookup_in(frame), budget)
            state.input_text = dumps(self.redactor.value(value, check))  # self._text
            state.input = value
            if frame is not None:
                frame.held += len(state.input_text)
                self.held += len(state.input_text)
            data = node.load_input(state.input)
            if node.body:  # a for-each node: the engine runs it
                self._start_loop(node_id, node, frame, data)
                return None
            keys = condition_keys(node, data, self.scope.key_resolver(frame), budget) \
                if node.node_type.condition_fields else _as_written
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
        own_ms = node.static_limit_ms
        limit = time.monotonic() + (limit_ms(node, data) if own_ms is None else own_ms) / 1000
        if limit > self.deadline:
            limit = self.deadline
        inline = node.always_inline or node.node_type.runs_inline(data)
        # (run_id, node_id, deadline, cancelled, settings, resolve, logger): given by
        # position, at half the cost of keywords; an inline handler is bounded by
        # ctx.check() against its limit
        ctx = NodeContext(self.run_id, node_id, limit,
                          _NEVER_CANCELLED if inline else _new_flag(),
                          self.settings, keys, node.logger)
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
            text = dumps(self.redactor.value(result, check))  # self._text
        except (ValueError, TypeError, RecursionError):
            raise NodeError("INTERNAL", "The node's result is not a JSON value.") from None
        if len(text) > self.max_result:
            raise NodeError("OUTPUT_TOO_LARGE", f"The result is {len(text)} characters of "
                            f"JSON; the limit is {self.max_result}.")
        return text

    # -- finishing nodes -----------------------------------------------------

    def _finish_attempt(self, node_id: str, outcome: Any, text: str | None = None,
                        ended: float | None = None) -> None:
        """An attempt's outcome, ``ended`` (monotonic) when the caller just read it."""
        node, state = self.nodes[node_id], self.states[node_id]
        if not isinstance(outcome, NodeError):
            state.end_attempt((time.monotonic() if ended is None else ended)
                              + self.epoch_offset, None)
            state.status, state.result, state.error = "success", outcome, None
            state.result_text = text
            if text is not None and node_id in self.frames:  # what the loop's result holds
                frame = self.frames[node_id]
                frame.chars += len(text)
                frame.held += len(text)
                self.held += len(text)
            self._settled(node_id)
            self._settle_children(node_id)
            return
        error = outcome.as_dict()
        error["message"] = self.redactor.text(error["message"])
        state.end_attempt((time.monotonic() if ended is None else ended) + self.epoch_offset,
                          error)
        state.error = error
        if outcome.code == "BLOCKED_DESTINATION":
            metrics.count(metrics.BLOCKED)
        wait_ms = retry_wait_ms(node, state.attempts, outcome)
        start_at = None if wait_ms is None else time.monotonic() + wait_ms / 1000
        if start_at is not None and start_at < self.deadline:
            heapq.heappush(self.timers, (start_at, node_id))
            self.changes += 1
            if self.events is not None:
                self._emit("node.retrying", f'{{"nodeId":"{node_id}","attempt":'
                           f'{state.attempts},"error":{dumps(error)},'
                           f'"retryInMs":{round(wait_ms)}}}')
            return
        state.status = "failure"
        self._settled(node_id)
        self._settle_children(node_id)

    def _settle_children(self, node_id: str) -> None:
        """Each child whose parents are now all final runs or is skipped, recursively.
        A node's children are in its own body (or outside loops, with it)."""
        nodes, states, waiting, frames = self.nodes, self.states, self.waiting, self.frames
        todo = [node_id]
        while todo:
            parent_id = todo.pop()
            frame = frames.get(parent_id)
            suffix = frame.suffix if frame is not None else ""
            for child in nodes[parent_id].children:
                child_id = child + suffix
                left = waiting[child_id] = waiting[child_id] - 1
                if left:
                    continue
                node = nodes[child_id]
                # Parents that all succeeded, none an "if": the child runs (skip_reason's
                # answer, without its walk).
                for parent in node.parents:
                    if states[parent + suffix].status != "success" or \
                            nodes[parent + suffix].type == "if":
                        reason = skip_reason(node, ((nodes[p + suffix], states[p + suffix])
                                                    for p in node.parents))
                        break
                else:
                    reason = None
                if reason is None:
                    self.ready.append(child_id)
                else:
                    self.states[child_id].skip(reason)
                    self._settled(child_id)
                    todo.append(child_id)

    def _suffix(self, node_id: str) -> str:
        frame = self.frames.get(node_id)
        return frame.suffix if frame is not None else ""

    def _settled(self, node_id: str) -> None:
        """A node is final: its entry is written now, within the run's size cap; a loop
        that ran no iteration lists its body as skipped; an iteration whose last instance
        this was ends."""
        node, state, frame = self.nodes[node_id], self.states[node_id], self.frames.get(node_id)
        if self.events is None:  # _write_entry's work, when nothing is streamed
            self.body.settle(node_id, node, state, frame)
            self.changes += 1
        else:
            self._write_entry(node_id, node, state, frame)
        state.input_text = state.result_text = None  # in the entry now
        if node.body and (node_id not in self.loops or not self.loops[node_id].next):
            self._skip_body(node_id, node, state)
        if frame is not None and not self.stopped:
            frame.remaining -= 1
            if not frame.remaining:
                self._iteration_ended(frame)

    def _write_entry(self, entry_id: str, node: PlanNode, state: NodeState,
                     frame: Frame | None = None) -> None:
        """A final node's entry of the answer (and, streamed, its ``node.finished``: the
        entry as it is, or bare — no input or result — once the stream's node events
        have passed ``STREAM_FULL_CHARS``, so a stream never holds or sends a large
        answer twice: ``run.finished`` has it all)."""
        self.body.settle(entry_id, node, state, frame)
        self.changes += 1
        if self.events is not None:
            entry = self.body.entries[entry_id]
            if self.streamed_chars + len(entry) > STREAM_FULL_CHARS:
                entry = node_view_text(node, state, frame, bare=True)
            self.streamed_chars += len(entry)
            self._emit("node.finished", f'{{"nodeId":"{entry_id}","state":{entry}}}')

    def _stop(self, why: str) -> None:
        """The run deadline passed, or the run was cancelled (``why``, a key of STOPS):
        running attempts are cancelled and fail (with TIMEOUT at the deadline), nodes
        between attempts fail with their last error, nodes not started are skipped."""
        self.stopped = why
        code, message = STOPS[why]
        error = NodeError("TIMEOUT" if why == "run_timeout" else code, message, True).as_dict()
        now = time.monotonic() + self.epoch_offset
        for node_id, state in list(self.states.items()):
            if node_id in self.running:
                self.running[node_id][2].set()
                state.end_attempt(now, error)
                state.status, state.error = "failure", error
            elif state.status == "running":  # between attempts: fails with its last error
                state.status, state.finished = "failure", state.finished or now
                if state.error is None or why == "cancelled":
                    state.error = error  # a loop whose iterations were still running
            elif state.status == "pending":
                state.skip(why)
            else:
                continue
            self._settled(node_id)
        self.running.clear()
        self.timers.clear()

    def partial_text(self) -> str:
        """The run so far in the answer's shape (SPEC §12): ``status: "running"``, the
        entries written, and the nodes running now as they stand; nodes not started are
        left out. Past ``PARTIAL_FULL_CHARS`` of entries, every entry is bare (status,
        times, errors; no input or result), so writing it costs little however large
        the answer grows: the final state has them all."""
        bare = self.body.size > PARTIAL_FULL_CHARS

        def view(entry_id: str) -> str | None:
            state = self.states[entry_id]
            if state.status == "pending":
                return None
            if state.status != "running" and not bare:
                return self.body.entries[entry_id]
            return node_view_text(self.nodes[entry_id], state, self.frames.get(entry_id),
                                  bare)

        return self.body.partial_text(
            summary(self.run_id, "running", round((time.monotonic() - self.began) * 1000),
                    self.started_cu, None), self.plan.top, view)

    # -- the response ----------------------------------------------------------

    def outcome(self) -> Outcome:
        # A failed body instance fails the run unless a loop around it goes on past a
        # failed item (onItemError "continue": the loop reports it in its iterations).
        failed = [n for n, s in self.states.items()
                  if s.status == "failure" and not self.nodes[n].continue_on_error
                  and not (n in self.frames and self.frames[n].absorbs)]
        if self.stopped:
            code, message = STOPS[self.stopped]
            error = {"code": code, "message": message}
        elif self.body.too_large:
            error = {"code": "RUN_TOO_LARGE", "message": (
                f"The run's answer reached its limit of {self.body.max_chars} characters; the "
                "results that did not fit were left out.")}
        elif failed:
            first = min(failed, key=lambda n: self.states[n].finished)
            others = [n for n in failed if n != first]
            message = f"Node {first!r} failed: {self.states[first].error['message']}"
            if others:  # a loop's instances can be thousands: the first few are named
                message += " Also failed: " + ", ".join(repr(n) for n in others[:NAMED])
                message += f" and {len(others) - NAMED} more." if len(others) > NAMED else "."
            error = {"code": "NODE_FAILED", "message": message}
        else:
            error = None
        duration_ms = round((time.monotonic() - self.began) * 1000)
        status = "cancelled" if self.stopped == "cancelled" else \
            "failure" if error else "success"
        total_cu = self.started_attempts
        text = self.body.text(summary(self.run_id, status, duration_ms, total_cu, error),
                              self.plan.top)
        return Outcome(text, status, total_cu, duration_ms, error,
                       [(self.nodes[n].type, state.status) for n, state in self.states.items()])

    # -- loops (SPEC §11) ------------------------------------------------------

    def _start_loop(self, node_id: str, node: PlanNode, frame: Frame | None,
                    data: dict) -> None:
        """Make room for the loop's instances and reserve their worst-case cost, then
        start its first iterations; an empty array succeeds at once."""
        items, size = data["array"], len(node.body)
        if self.instances + len(items) * size > MAX_INSTANCES:
            raise NodeError("INVALID_INPUT", (
                f"{len(items)} items × {size} body node{'s' * (size != 1)} would bring the "
                "run's body-node "
                f"instances to {self.instances + len(items) * size}; the limit is "
                f"{MAX_INSTANCES}."))
        worst = len(items) * sum(self.plan.nodes[m].worst_case_cu for m in node.body)
        if worst and not self.reserve(worst):
            raise NodeError("INSUFFICIENT_CU", f"The loop's {len(items)} items need up to "
                            f"{worst} CU; the token's balance cannot cover them.")
        self.instances += len(items) * size
        self.open_loops += 1
        loop = self.loops[node_id] = Loop(node_id, node, frame, items, data["concurrency"],
                                          data["onItemError"] == "stop", self.max_result)
        self._advance(loop)

    def _advance(self, loop: Loop) -> None:
        """Start the iterations that may start now; finish the loop when it is done."""
        # A second iteration at once only while the loops' iterations in flight hold
        # less than HELD_CHARS of inputs and results: `concurrency` must not multiply
        # a run's memory. One at a time always goes on.
        while loop.may_start() and not self.body.too_large and \
                time.monotonic() < self.stop_at() and \
                (not loop.running or self.held < HELD_CHARS):
            self._start_iteration(loop, loop.frame_for(loop.next))
            loop.next += 1
            loop.running += 1
        if loop.done or (loop.running == 0 and self.body.too_large):
            self._finish_loop(loop)

    def _start_iteration(self, loop: Loop, frame: Frame) -> None:
        """Every body node gets an instance in ``frame``; the entries are ready."""
        for member in loop.node.body:
            node = self.plan.nodes[member]
            instance = member + frame.suffix
            self.nodes[instance], self.states[instance] = node, NodeState()
            self.frames[instance], self.waiting[instance] = frame, len(node.parents)
            frame.instances.append(instance)
            if not node.parents:
                self.ready.append(instance)
        frame.remaining = len(frame.instances)
        self.body.nest(loop.instance, frame.instances)

    def _iteration_ended(self, frame: Frame) -> None:
        """The last instance of ``frame`` is final: record the iteration, go on."""
        loop = self.loops[frame.loop + (frame.parent.suffix if frame.parent else "")]
        failure, results = None, {}
        for instance in frame.instances:
            node, state = self.nodes[instance], self.states[instance]
            results[node.id] = state.result if state.status == "success" else None
            if failure is None and state.status == "failure" and not node.continue_on_error:
                failure = (instance, state.error["message"] if state.error else "")
        loop.finished(frame, failure, results)
        for instance in frame.instances:  # nothing outside the iteration reads them again
            state = self.states[instance]
            state.input, state.result = MISSING, None
        self.held -= frame.held
        self._advance(loop)

    def _finish_loop(self, loop: Loop) -> None:
        """The loop node's outcome: its result, or ITERATION_FAILED (with its result), or
        OUTPUT_TOO_LARGE when its result or the run's answer outgrew its cap: the loop
        then started no more iterations (memory stays bounded however many items)."""
        state = self.states[loop.instance]
        self.open_loops -= 1
        if loop.chars > loop.max_chars or (self.body.too_large and
                                           loop.next < len(loop.items)):
            self._finish_attempt(loop.instance, NodeError("OUTPUT_TOO_LARGE", (
                f"The loop stopped after {loop.next} of {len(loop.items)} iterations: "
                + (f"its iterations' results reached {loop.chars} characters of JSON; the "
                   f"limit is {loop.max_chars}." if loop.chars > loop.max_chars else
                   "the run's answer reached its size limit."))))
            return
        result = loop.result()
        try:
            text = self._result_text(result, self.check)
        except NodeError as error:
            self._finish_attempt(loop.instance, error)
            return
        if not loop.stopped:
            self._finish_attempt(loop.instance, result, text)
            return
        index, instance, message = loop.first_failure
        state.result, state.result_text = result, text  # which iterations ran, and how
        self._finish_attempt(loop.instance, NodeError(
            "ITERATION_FAILED", f"Iteration {index} failed: node {instance!r} failed: "
            f"{message}"))

    def _skip_body(self, node_id: str, node: PlanNode, state: NodeState) -> None:
        """A loop that ran no iteration lists each node of its body once, skipped: why
        the loop did not run them (SPEC §11)."""
        if self.stopped:
            reason = self.stopped
        elif state.status == "skipped":
            reason = state.reason
        elif state.status == "failure":
            reason = "upstream_failed"
        else:
            reason = "no_iterations"
        suffix, listed = self._suffix(node_id), []
        for member in node.body:
            placeholder = member + suffix
            if placeholder in self.states:  # listed already (a loop settled twice: never)
                continue
            self.nodes[placeholder], self.states[placeholder] = self.plan.nodes[member], \
                NodeState()
            self.states[placeholder].skip(reason)
            listed.append(placeholder)
        self.body.nest(node_id, listed)
        for placeholder in listed:
            self._write_entry(placeholder, self.nodes[placeholder], self.states[placeholder])
            if self.nodes[placeholder].body:
                self._skip_body(placeholder, self.nodes[placeholder],
                                self.states[placeholder])


# Cancel flags of pooled attempts whose handlers returned with the flag unset: as good
# as new, and a new one (a threading.Event) costs as much as the rest of a pooled
# attempt's start. Shared by this process's runs (list.append and pop are atomic).
_spare_flags: list[Cancel] = []


def _new_flag() -> Cancel:
    try:
        return _spare_flags.pop()
    except IndexError:
        return Cancel()


def _as_written(key: str) -> str:
    """The condition keys of a type that has none: each as written."""
    return key
