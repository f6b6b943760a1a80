"""Run control inside the engine (SPEC §12): the tick, cancelling, the partial state and
the events a streamed run makes, through the engine's entry point."""
from __future__ import annotations

import itertools
import json
import time

import pytest

from app import engine
from app.engine import Run
from app.validation import Limits, check_request
from tests.helpers import definition

pytestmark = pytest.mark.usefixtures("test_nodes")


def make_run(body: dict, run_id: str = "run_ctl", **options) -> Run:
    return Run(check_request(body, Limits()), run_id, **options)


def delays(*edges: str, **delay_ms: int) -> dict:
    return {"definition": definition(*edges, **{
        name: {"type": "delay", "payload": {"delayMs": ms}} for name, ms in delay_ms.items()})}


def entries(body: dict) -> dict[str, tuple]:
    return {k: (v["status"], v.get("reason") or (v.get("error") or {}).get("code"))
            for k, v in body["executionState"].items()}


def test_a_short_run_is_never_interrupted_by_the_tick():
    calls = []
    out = make_run(delays("root>a", a=50), tick=lambda run: calls.append(1)).execute()
    assert out["status"] == "success" and calls == []


def test_a_long_run_ticks_every_half_second_while_it_lasts():
    calls = []
    started = time.monotonic()
    out = make_run(delays("root>a", a=1600),
                   tick=lambda run: calls.append(time.monotonic() - started)).execute()
    assert out["status"] == "success"
    assert 2 <= len(calls) <= 4, calls  # at ~0.5, 1.0, 1.5 s
    assert all(b - a >= engine.TICK_S * 0.9 for a, b in itertools.pairwise(calls))


def test_cancel_fails_running_attempts_and_skips_what_has_not_started():
    asked = time.monotonic()
    out = make_run(delays("root>slow", "root>fast", "slow>after", "fast>done",
                          slow=10_000, fast=1, after=1, done=1),
                   tick=lambda run: True).execute()
    stopped = time.monotonic() - asked
    assert out["status"] == "cancelled"
    assert out["error"]["code"] == "CANCELLED"
    assert entries(out) == {"root": ("success", None), "slow": ("failure", "CANCELLED"),
                            "fast": ("success", None), "after": ("skipped", "cancelled"),
                            "done": ("success", None)}
    assert out["totalCu"] == 3  # slow, fast and done started: each is charged
    assert stopped < engine.TICK_S + 0.5, stopped


def test_a_delay_is_woken_when_its_run_is_cancelled():
    run = make_run(delays("root>a", a=30_000), tick=lambda run: True)
    run.execute()
    # The handler saw its cancel: its late outcome arrives at once, its thread is free.
    node_id, *_ = run.outcomes.get(timeout=1)
    assert node_id == "a"


def test_cancel_between_attempts_fails_the_node_with_cancelled():
    body = {"definition": definition("root>flaky", flaky={
        "type": "t-flaky", "payload": {"failures": 5, "code": "UPSTREAM"},
        "retry": {"maxAttempts": 5, "initialDelayMs": 5000}})}
    out = make_run(body, "run_ctl_between", tick=lambda run: True).execute()
    assert out["status"] == "cancelled"
    assert entries(out)["flaky"] == ("failure", "CANCELLED")


def test_a_loop_in_flight_is_cancelled_with_its_iterations():
    body = {"definition": {"nodes": {
        "root": {"type": "manual", "children": ["each"]},
        "each": {"type": "for-each", "payload": {"array": [1, 2, 3, 4], "concurrency": 1},
                 "loopBody": ["wait"]},
        "wait": {"type": "delay", "payload": {"delayMs": 2000}},
    }}}
    ticks = iter([False, True])
    out = make_run(body, tick=lambda run: next(ticks, True)).execute()
    assert out["status"] == "cancelled"
    state = entries(out)
    assert state["each"] == ("failure", "CANCELLED")
    assert state["wait[0]"] == ("failure", "CANCELLED")
    assert not any(key.startswith("wait[1]") for key in state)  # never started


def test_the_partial_state_has_the_answers_shape_with_what_has_happened_so_far():
    seen = []
    run = make_run(delays("root>a", "a>b", "b>c", a=10, b=1200, c=10),
                   tick=lambda run: seen.append(json.loads(run.partial_text())) or False)
    final = run.execute()
    partial = seen[0]
    assert partial["runId"] == "run_ctl" and partial["status"] == "running"
    assert partial["error"] is None and partial["totalCu"] == 2
    assert list(partial["executionState"]) == ["root", "a", "b"]  # c: not started
    assert partial["executionState"]["a"] == final["executionState"]["a"]
    running = partial["executionState"]["b"]
    assert running["status"] == "running" and "startedAt" in running
    assert "finishedAt" not in running and running["input"] == {"delayMs": 1200}


def test_a_streamed_run_reports_each_attempt_and_entry_in_order():
    body = {"definition": definition("root>flaky", "flaky>after", flaky={
        "type": "t-flaky", "payload": {"failures": 1, "code": "UPSTREAM"},
        "retry": {"maxAttempts": 3, "initialDelayMs": 10}}, after={"type": "t-echo"})}
    run = make_run(body, "run_ctl_stream", stream=True)
    events = []
    for _ in run.passes():
        events.extend(run.events)
        run.events.clear()
    outcome = run.outcome()
    names = [(name, json.loads(data)["nodeId"]) for name, data in events]
    assert names == [("node.finished", "root"), ("node.started", "flaky"),
                     ("node.retrying", "flaky"), ("node.started", "flaky"),
                     ("node.finished", "flaky"), ("node.started", "after"),
                     ("node.finished", "after")]
    retrying = json.loads(events[2][1])
    assert retrying["attempt"] == 1 and retrying["retryInMs"] == 10
    assert retrying["error"]["code"]
    body_entries = json.loads(outcome.text)["executionState"]
    for name, data in events:
        if name == "node.finished":
            event = json.loads(data)
            assert event["state"] == body_entries[event["nodeId"]]


def test_an_unstreamed_run_keeps_no_events():
    run = make_run(delays("root>a", a=1))
    run.execute()
    assert run.events is None


def test_a_node_that_tries_again_logs_every_attempt():
    body = {"definition": definition("root>flaky", "root>once", flaky={
        "type": "t-flaky", "payload": {"failures": 2, "code": "UPSTREAM"},
        "retry": {"maxAttempts": 3, "initialDelayMs": 20}}, once={"type": "t-echo"})}
    out = make_run(body, "run_ctl_log").execute()
    flaky = out["executionState"]["flaky"]
    assert flaky["attempts"] == 3 and flaky["status"] == "success"
    log = flaky["attemptLog"]
    assert [bool(entry["error"]) for entry in log] == [True, True, False]
    assert log[0]["error"]["code"] == "UPSTREAM"
    assert log[0]["startedAt"] == flaky["startedAt"]
    assert log[-1]["finishedAt"] == flaky["finishedAt"]
    for entry, after in itertools.pairwise(log):
        assert entry["finishedAt"] <= after["startedAt"]  # the wait between them
    assert all(entry["durationMs"] >= 0 for entry in log)
    assert "attemptLog" not in out["executionState"]["once"]


def test_a_large_run_in_flight_shows_bare_entries_so_writing_it_stays_cheap():
    seen = []
    body = {"definition": definition("root>big", "big>wait", big={
        "type": "t-big", "payload": {"failures": engine.PARTIAL_FULL_CHARS + 10}},
        wait={"type": "delay", "payload": {"delayMs": 700}})}
    run = make_run(body, "run_ctl_big",
                   tick=lambda run: seen.append(run.partial_text()) or False)
    final = run.execute()
    partial = json.loads(seen[0])
    assert len(seen[0]) < 2000
    assert partial["executionState"]["big"] == {
        key: value for key, value in final["executionState"]["big"].items()
        if key not in ("input", "result")}
    assert partial["executionState"]["wait"]["status"] == "running"
    assert "input" not in partial["executionState"]["wait"]
    assert len(final["executionState"]["big"]["result"]["text"]) > engine.PARTIAL_FULL_CHARS


def test_a_large_streamed_run_sends_its_entries_bare_past_the_streams_cap():
    """A stream must not hold or send a large answer twice: run.finished has it all."""
    body = {"definition": definition("root>small", "small>big", small={"type": "t-echo"},
                                     big={"type": "t-big", "payload": {
                                         "failures": engine.STREAM_FULL_CHARS + 10}})}
    run = make_run(body, "run_ctl_stream_big", stream=True)
    for _ in run.passes():
        pass
    finished = {json.loads(data)["nodeId"]: json.loads(data)["state"]
                for name, data in run.events if name == "node.finished"}
    answer = json.loads(run.outcome().text)["executionState"]
    assert finished["small"] == answer["small"]  # within the cap: as it is
    assert "result" in answer["big"] and "result" not in finished["big"]
    assert finished["big"] == {key: value for key, value in answer["big"].items()
                               if key not in ("input", "result")}
    assert run.streamed_chars < 2 * 1024 * 1024
