"""A node's run state, the small pure rules over it (SPEC §1, §3), and the run's body.

The body leaves the process as JSON text built piece by piece: each node's
input and result are redacted and serialized when they come into being (on
the thread that made them, within the attempt's time limit), so the end of a
run only joins texts, whatever their size, and the run's size is known as it
grows (SPEC §3's caps).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .expressions import MISSING
from .jstext import iso


@dataclass
class NodeState:
    status: str = "pending"  # pending → running → success | failure; or skipped
    input: Any = MISSING
    result: Any = None
    error: dict | None = None
    reason: str | None = None
    started: float | None = None  # epoch seconds: first attempt's start
    finished: float | None = None  # epoch seconds: last attempt's end
    attempts: int = 0
    attempt_started: float = 0.0  # monotonic: this attempt's start
    # What leaves the process: the redacted JSON text of ``input`` and ``result``
    # (None where absent, or dropped because the run grew past its size cap).
    input_text: str | None = None
    result_text: str | None = None
    # Once a second attempt begins: every attempt's [start, end, error] (SPEC §14's
    # attemptLog); a node that makes one attempt keeps none.
    attempt_log: list[list] | None = None

    def begin_attempt(self, epoch: float, monotonic: float) -> None:
        self.attempts += 1
        if self.attempts > 1:
            if self.attempt_log is None:  # the first attempt, as it ended
                self.attempt_log = [[self.started, self.finished, self.error]]
            self.attempt_log.append([epoch, None, None])
        self.status = "running"
        self.attempt_started = monotonic
        if self.started is None:
            self.started = epoch

    def end_attempt(self, epoch: float, error: dict | None) -> None:
        """The attempt running ended at ``epoch``, failed with ``error`` or not."""
        self.finished = epoch
        if self.attempt_log is not None:
            self.attempt_log[-1][1:] = (epoch, error)

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason

    def view(self, payload: dict) -> dict:
        """What ``{{node.…}}`` expressions see of this node."""
        return {key: self.field(key, payload) for key in VIEW_FIELDS}

    def field(self, key: str, payload: dict) -> Any:
        """``view(payload)[key]`` without building the view; ``MISSING`` for other keys."""
        if key == "result":
            return self.result
        if key == "input":
            return None if self.input is MISSING else self.input
        if key == "payload":
            return payload
        if key == "status":
            return self.status
        if key == "error":
            return self.error
        return MISSING


VIEW_FIELDS = ("result", "input", "payload", "status", "error")


def skip_reason(node, parents: Iterable[tuple[Any, NodeState]]) -> str | None:
    """None when a node whose parents (``(node, state)`` pairs) are all final should run,
    else why it is skipped."""
    active = False
    for parent, state in parents:
        if state.status == "skipped":
            if state.reason == "upstream_failed":
                return "upstream_failed"
            continue
        if state.status == "failure" and not parent.continue_on_error:
            return "upstream_failed"
        if parent.type == "if":
            active |= (state.result or {}).get("branch") == node.branch
        else:
            active = True
    return None if active else "branch_not_taken"


# The body's JSON: compact, ASCII (lone surrogates stay escaped), never NaN. The C
# encoder is called directly: JSONEncoder.encode builds one per call, and a run
# encodes two or three values per node.
def _unserializable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


_ENCODE = json.encoder.c_make_encoder(  # markers None: values are trees, never cyclic
    None, _unserializable, json.encoder.encode_basestring_ascii, None, ":", ",",
    False, False, False) if json.encoder.c_make_encoder else None
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_unserializable)


def dumps(value: Any) -> str:
    """``value`` as compact ASCII JSON; ValueError for NaN, TypeError for a non-JSON value."""
    if _ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_ENCODE(value, 0))


def node_view_text(node, state: NodeState, frame=None, bare: bool = False) -> str:
    """One entry of ``executionState`` as JSON text, the input and result spliced in
    (``bare``: left out); a body instance's (``frame``: its iteration) with its
    ``iteration`` and ``loop``.

    Type names, statuses, reasons, timestamps and node ids are plain ASCII words of
    ours, written as they are; everything else goes through ``dumps``.
    """
    parts = [_head(node.type, state.status, node.level)]
    if frame is not None:
        parts.append(f',"iteration":{frame.index},"loop":"{frame.loop}"')
    if state.input_text is not None and not bare:
        parts += (',"input":', state.input_text)
    # A result is shown once a node succeeded, and on a loop stopped by a failed
    # iteration (its iterations say which); no other failure keeps one.
    if state.result_text is not None and not bare:
        parts += (',"result":', state.result_text)
    if state.error is not None and state.status == "failure":
        parts += (',"error":', dumps(state.error))
    if state.reason:
        parts.append(f',"reason":"{state.reason}"')
    if state.started is not None:
        started = iso(state.started)
        if state.finished is not None and state.status != "running":
            # max(0, round(ms)) without the calls for a node quicker than half a
            # millisecond (round(0.5) is 0)
            ms = (state.finished - state.started) * 1000
            duration = round(ms) if ms > 0.5 else 0
            parts.append(f',"startedAt":"{started}","finishedAt":"'
                         f'{started if ms == 0 else iso(state.finished)}",'
                         f'"durationMs":{_NUMBERS[duration] if duration < 1000 else duration}')
        else:
            parts.append(f',"startedAt":"{started}"')
    attempts = state.attempts
    if node.id != "root" and attempts:  # counts and durations: small ones looked up
        parts.append(f',"attempts":{_NUMBERS[attempts] if attempts < 1000 else attempts}')
    if state.attempt_log is not None:
        parts += (',"attemptLog":', dumps([_attempt_entry(*attempt)
                                           for attempt in state.attempt_log]))
    parts.append("}")
    return "".join(parts)


_NUMBERS = tuple(str(count) for count in range(1000))


@functools.lru_cache(maxsize=1024)
def _head(type_: str, status: str, level: int) -> str:
    """An entry's first fields: the same for every node of a type, status and level."""
    return f'{{"type":"{type_}","status":"{status}","level":{level}'


def _attempt_entry(started: float, finished: float | None, error: dict | None) -> dict:
    """One attempt of ``attemptLog`` (SPEC §14); one still running has no end yet."""
    if finished is None:
        return {"startedAt": iso(started), "finishedAt": None, "durationMs": None,
                "error": error}
    return {"startedAt": iso(started), "finishedAt": iso(finished),
            "durationMs": max(0, round((finished - started) * 1000)), "error": error}


class RunBody:
    """The answer of a run as it grows (SPEC §1): each node's entry written as JSON text
    when the node settles, within the run's size cap (SPEC §3).

    A loop's body instances (``check[3]``, SPEC §11) are entries too, listed after
    their loop's entry, an iteration at a time (``nest``), and nested loops' after
    theirs.
    """

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.entries: dict[str, str] = {}  # entry id → its entry
        self.nested: dict[str, list[str]] = {}  # a loop's entry id → its instances' ids
        self.size = 0  # characters of the entries so far
        self.too_large = False  # results or inputs were left out to stay within the cap

    def settle(self, entry_id: str, node, state: NodeState, frame=None) -> None:
        """Write the entry of a node that is final (``frame``: the iteration of a body
        instance); past the cap, its result and then its input are left out (the result
        that pushed the answer over is dropped)."""
        entry = node_view_text(node, state, frame)
        size = self.size + len(entry)
        if size <= self.max_chars:  # the usual case: well within the cap
            self.size = size
            self.entries[entry_id] = entry
            return
        if state.result_text is not None:
            self.too_large, state.result_text = True, None
            entry = node_view_text(node, state, frame)
        if self.size + len(entry) > self.max_chars and state.input_text is not None:
            self.too_large, state.input_text = True, None
            entry = node_view_text(node, state, frame)
        self.size += len(entry)
        self.entries[entry_id] = entry

    def nest(self, loop_entry_id: str, entry_ids: Iterable[str]) -> None:
        """List ``entry_ids`` (an iteration's instances, or the placeholders of a loop
        that ran none) after the loop's entry and the ones nested there before."""
        self.nested.setdefault(loop_entry_id, []).extend(entry_ids)

    def text(self, summary: Mapping[str, Any], order: Iterable[str]) -> str:
        """The whole body: ``summary`` (see ``summary``), then the entries in ``order``,
        each followed by those nested after it."""
        # body_text's work, without a generator per entry: every run ends here
        entries, parts = self.entries, _body_start(summary)
        for entry_id in self._ordered(order) if self.nested else order:
            parts += ('"', entry_id, '":', entries[entry_id], ",")
        return _body_end(parts)

    def partial_text(self, summary: Mapping[str, Any], order: Iterable[str],
                     view: Callable[[str], str | None]) -> str:
        """The body of a run in flight: in ``order``, each entry's ``view`` (None: left
        out, a node not started)."""
        return body_text(summary, ((entry_id, text) for entry_id in self._ordered(order)
                                   if (text := view(entry_id)) is not None))

    def _ordered(self, order: Iterable[str]) -> Iterable[str]:
        stack = [iter(order)]
        while stack:
            entry_id = next(stack[-1], None)
            if entry_id is None:
                stack.pop()
                continue
            yield entry_id
            if entry_id in self.nested:
                stack.append(iter(self.nested[entry_id]))


def summary(run_id: str, status: str, duration_ms: int, total_cu: int,
            error: dict | None) -> dict:
    """The fields of a run's body before ``executionState`` (SPEC §1)."""
    return {"runId": run_id, "status": status, "durationMs": duration_ms,
            "totalCu": total_cu, "error": error}


def running_text(run_id: str) -> str:
    """The stored body of a run in flight until its first partial state: the answer's
    shape (SPEC §12), nothing run yet. (What ``body_text`` writes for it, written at
    once: every run stores it.)"""
    return (f'{{"runId":{json.encoder.encode_basestring_ascii(run_id)},"status":"running",'
            f'"durationMs":0,"totalCu":0,"error":null,"executionState":{{}}}}')


def aborted_text(run_id: str, duration_ms: int, total_cu: int) -> str:
    """The stored body of a run whose worker stopped before it finished."""
    return body_text(summary(run_id, "failure", duration_ms, total_cu, {
        "code": "ABORTED",
        "message": "The worker running this run stopped before the run finished."}), ())


class Outcome(NamedTuple):  # (a frozen dataclass's __init__ costs 5 times as much)
    """A finished run: its body as JSON text, and the summary the caller logs and counts."""

    text: str
    status: str
    total_cu: int
    duration_ms: int
    error: dict | None
    nodes: list[tuple[str, str]]  # (type, status) of every node, for the metrics

    def body(self) -> dict:
        return json.loads(self.text)


def body_text(summary: Mapping[str, Any], views: Iterable[tuple[str, str]]) -> str:
    """The response body of SPEC §1: ``summary``'s fields, then ``executionState`` built
    from ``(node id, node_view_text)`` pairs in order."""
    parts = _body_start(summary)
    for node_id, view in views:  # one join: the views may add up to the run's whole cap
        parts += ('"', node_id, '":', view, ",")  # ids are [A-Za-z0-9_-] (and "[i]")
    return _body_end(parts)


def _body_start(summary: Mapping[str, Any]) -> list[str]:
    """A body's first pieces: ``summary``'s fields, and ``executionState`` opened."""
    if summary.__class__ is dict and tuple(summary) == _SUMMARY_KEYS:
        duration, total_cu, error = summary["durationMs"], summary["totalCu"], summary["error"]
        # What dumps writes for a summary's fields (every run's answer has them): the
        # status is a word of ours, the counts plain ints; anything else goes to dumps.
        if duration.__class__ is int and total_cu.__class__ is int and \
                summary["status"] in _STATUSES and summary["runId"].__class__ is str:
            return [f'{{"runId":{_ascii(summary["runId"])},"status":"{summary["status"]}",'
                    f'"durationMs":{duration},"totalCu":{total_cu},"error":'
                    f'{"null" if error is None else dumps(error)}',
                    ',"executionState":{']
    return [dumps(summary if summary.__class__ is dict else dict(summary))[:-1],
            ',"executionState":{']


_SUMMARY_KEYS = ("runId", "status", "durationMs", "totalCu", "error")  # summary()'s
_STATUSES = frozenset(("running", "success", "failure", "cancelled"))
_ascii = json.encoder.encode_basestring_ascii


def _body_end(parts: list[str]) -> str:
    """The body of ``_body_start``'s pieces and the entries after them (each followed by
    a comma), closed."""
    if parts[-1] == ",":
        parts.pop()
    parts.append("}}")
    return "".join(parts)
