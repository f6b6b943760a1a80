"""The engine through its entry point: scheduling, states, deadlines, retries (SPEC §3)."""
from __future__ import annotations

import itertools
import json
import re
import time

import pytest

from tests.helpers import definition, run_engine, run_nodes

pytestmark = pytest.mark.usefixtures("test_nodes")

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def states(out: dict) -> dict[str, tuple]:
    return {k: (v["status"], v.get("reason") or (v.get("error") or {}).get("code"))
            for k, v in out["executionState"].items()}


# -- parallelism -------------------------------------------------------------------

def test_siblings_run_side_by_side():
    out = run_nodes("root>a", "root>b", a={"type": "t-meet"}, b={"type": "t-meet"})
    assert out["status"] == "success", out
    assert out["executionState"]["a"]["result"] == {"met": True}


def test_node_starts_when_its_own_parents_are_done_not_the_whole_level():
    # `late` (level 2) must run while `slow` (level 1) is still running: slow waits
    # for the event that only late sets.
    out = run_nodes("root>slow", "root>fast", "fast>late",
                    slow={"type": "t-await", "payload": {"name": "late-ran"}},
                    fast={"type": "t-echo"},
                    late={"type": "t-signal", "payload": {"name": "late-ran"}})
    assert out["status"] == "success", out
    assert out["executionState"]["late"]["level"] == 2


def test_pooled_nodes_start_before_inline_ones_of_the_same_round():
    out = run_nodes("root>a", "root>b", "root>c",
                    a={"type": "t-await", "payload": {"name": "x"}},
                    b={"type": "t-echo-inline"},
                    c={"type": "t-signal", "payload": {"name": "x"}})
    assert out["status"] == "success", out


def test_request_context_reaches_node_threads():
    from app.logconfig import request_id

    token = request_id.set("req-42")
    try:
        out = run_nodes("root>a", a={"type": "t-echo"})
    finally:
        request_id.reset(token)
    assert out["executionState"]["a"]["result"]["requestId"] == "req-42"


# -- states and edges --------------------------------------------------------------

def test_join_runs_once_after_both_parents():
    out = run_nodes("root>a", "root>b", "a>j", "b>j",
                    a={"type": "t-echo"}, b={"type": "t-echo"}, j={"type": "t-echo"})
    assert out["executionState"]["j"]["attempts"] == 1
    assert out["executionState"]["j"]["level"] == 2
    assert out["totalCu"] == 3


def test_failure_skips_descendants_and_independent_branches_finish():
    out = run_nodes("root>bad", "bad>child", "child>grandchild", "root>ok", "ok>after",
                    bad={"type": "t-fail", "payload": {"code": "INTERNAL"}},
                    child={"type": "t-echo"}, grandchild={"type": "t-echo"},
                    ok={"type": "t-echo"}, after={"type": "t-echo"})
    assert states(out) == {
        "root": ("success", None), "bad": ("failure", "INTERNAL"), "ok": ("success", None),
        "child": ("skipped", "upstream_failed"), "after": ("success", None),
        "grandchild": ("skipped", "upstream_failed")}
    assert out["status"] == "failure"
    assert out["error"]["code"] == "NODE_FAILED"
    assert "'bad'" in out["error"]["message"]
    assert out["totalCu"] == 3  # bad, ok, after; skipped nodes and root cost nothing


def test_join_of_a_failed_branch_is_skipped_even_with_another_active_parent():
    out = run_nodes("root>bad", "bad>mid", "root>ok", "mid>join", "ok>join",
                    bad={"type": "t-fail"}, mid={"type": "t-echo"}, ok={"type": "t-echo"},
                    join={"type": "t-echo"})
    assert states(out)["join"] == ("skipped", "upstream_failed")


def test_continue_on_error_lets_children_run_and_read_the_error():
    out = run_nodes("root>bad", "bad>next",
                    bad={"type": "t-fail", "payload": {"code": "HTTP_ERROR"},
                         "continueOnError": True},
                    next={"type": "t-echo", "payload": {"value": "{{$nodes.bad.error.code}}"}})
    assert out["status"] == "success"
    assert out["error"] is None
    assert out["executionState"]["bad"]["status"] == "failure"
    assert out["executionState"]["next"]["result"]["value"] == "HTTP_ERROR"


def test_node_failed_names_the_first_and_lists_the_others():
    out = run_nodes("root>a", "root>b", a={"type": "t-fail"}, b={"type": "t-fail"})
    message = out["error"]["message"]
    assert re.match(r"Node '(a|b)' failed: failed with NETWORK_ERROR Also failed: '(a|b)'\.",
                    message), message


def test_unexpected_handler_exception_is_internal_without_traceback():
    out = run_nodes("root>a", a={"type": "t-crash"})
    error = out["executionState"]["a"]["error"]
    assert error["code"] == "INTERNAL" and error["retryable"] is False
    assert "secret internals" not in error["message"] and "Traceback" not in error["message"]


def test_input_that_resolves_to_the_wrong_type_is_invalid_input_and_costs_one_cu():
    out = run_nodes("root>a", payload={"n": "not a number"},
                    a={"type": "t-flaky", "payload": {"failures": "{{root.result.n}}"}})
    node = out["executionState"]["a"]
    assert node["error"]["code"] == "INVALID_INPUT"
    assert "failures" in node["error"]["message"]
    assert node["input"] == {"failures": "not a number"}
    assert out["totalCu"] == 1


def test_execution_state_order_levels_and_shape():
    body = {"definition": definition("root>b", "root>a", "a>c", "b>c", "root>d", "d>e", "e>c",
                                     c={"type": "t-echo"}, a={"type": "t-echo"},
                                     b={"type": "t-echo"}, d={"type": "t-echo"},
                                     e={"type": "t-echo"}),
            "payload": {"message": "hi", "triggeredAt": "client value"}}
    out = run_engine(body)
    execution = out["executionState"]
    assert list(execution) == ["root", "a", "b", "d", "e", "c"]
    assert [execution[n]["level"] for n in execution] == [0, 1, 1, 1, 2, 3]
    root = execution["root"]
    assert root["result"]["message"] == "hi"
    triggered = root["result"]["triggeredAt"]
    assert triggered != "client value" and ISO.match(triggered)
    assert "attempts" not in root and "input" not in root
    a = execution["a"]
    assert set(a) == {"type", "status", "level", "input", "result", "startedAt", "finishedAt",
                      "durationMs", "attempts"}
    assert ISO.match(a["startedAt"]) and ISO.match(a["finishedAt"])
    assert isinstance(out["durationMs"], int) and out["runId"] == "run_test"


# -- time limits -------------------------------------------------------------------

def test_inline_attempts_times_follow_the_wall_clock_and_each_other():
    # An inline attempt's start and end are read from the run's clock (the readings
    # that check the deadline): still epoch times, in order along the chain.
    before = time.time()
    out = run_nodes("root>a", "a>b", "b>c", a={"type": "log", "payload": {"message": "1"}},
                    b={"type": "log", "payload": {"message": "2"}},
                    c={"type": "log", "payload": {"message": "3"}})
    after = time.time()
    assert out["status"] == "success", out
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before))
    stamps = [out["executionState"][n][f] for n in ("root", "a", "b", "c")
              for f in ("startedAt", "finishedAt")]
    assert stamps == sorted(stamps), stamps
    assert iso <= stamps[0] and stamps[-1] <= time.strftime(
        "%Y-%m-%dT%H:%M:%S.999Z", time.gmtime(after)), (before, stamps, after)


def test_run_deadline_answers_at_once_with_partial_state(test_nodes):
    started = time.monotonic()
    out = run_engine({"definition": definition(
        "root>stuck", "stuck>after", "root>quick", "quick>b",
        stuck={"type": "t-hang"}, after={"type": "t-echo"}, quick={"type": "t-echo"},
        b={"type": "t-hang"}), "timeoutMs": 300})
    elapsed = time.monotonic() - started
    assert elapsed < 5, "a hung node held the response"  # it would hang 30 s
    assert out["status"] == "failure" and out["error"]["code"] == "RUN_TIMEOUT"
    assert states(out) == {
        "root": ("success", None), "stuck": ("failure", "TIMEOUT"), "quick": ("success", None),
        "b": ("failure", "TIMEOUT"), "after": ("skipped", "run_timeout")}
    assert out["executionState"]["stuck"]["error"]["retryable"] is True


def test_node_timeout_bounds_each_attempt():
    out = run_nodes("root>slow", "root>ok", slow={"type": "t-hang", "timeoutMs": 50},
                    ok={"type": "t-echo"})
    assert states(out)["slow"] == ("failure", "TIMEOUT")
    assert out["executionState"]["slow"]["attempts"] == 1
    assert out["executionState"]["ok"]["status"] == "success"
    assert out["error"]["code"] == "NODE_FAILED"


def test_timed_out_attempts_are_retried():
    out = run_nodes("root>slow", slow={"type": "t-hang", "timeoutMs": 30,
                                       "retry": {"maxAttempts": 2, "initialDelayMs": 1}})
    assert out["executionState"]["slow"]["attempts"] == 2
    assert out["totalCu"] == 2


# -- retries -----------------------------------------------------------------------

def test_retryable_errors_are_retried_until_success(test_nodes):
    out = run_nodes("root>a", a={"type": "t-flaky", "payload": {"failures": 2},
                                 "retry": {"maxAttempts": 3, "initialDelayMs": 1}})
    node = out["executionState"]["a"]
    assert node["status"] == "success" and node["attempts"] == 3
    assert "error" not in node
    assert out["totalCu"] == 3


def test_without_retry_a_node_makes_one_attempt():
    out = run_nodes("root>a", a={"type": "t-flaky", "payload": {"failures": 1}})
    assert out["executionState"]["a"]["attempts"] == 1


def test_retries_stop_at_max_attempts_with_the_last_error():
    out = run_nodes("root>a", a={"type": "t-flaky", "payload": {"failures": 9},
                                 "retry": {"maxAttempts": 4, "initialDelayMs": 1}})
    node = out["executionState"]["a"]
    assert node["attempts"] == 4 and node["error"]["message"] == "attempt 4 failed"


def test_non_retryable_errors_are_not_retried_by_default():
    out = run_nodes("root>a", a={"type": "t-fail", "payload": {"code": "INVALID_INPUT"},
                                 "retry": {"maxAttempts": 5, "initialDelayMs": 1}})
    assert out["executionState"]["a"]["attempts"] == 1


def test_retry_on_lists_exactly_the_codes_retried():
    retry = {"maxAttempts": 3, "initialDelayMs": 1, "retryOn": ["INVALID_INPUT"]}
    listed = run_nodes("root>a", a={"type": "t-fail", "payload": {"code": "INVALID_INPUT"},
                                    "retry": retry})
    unlisted = run_nodes("root>a", a={"type": "t-fail", "payload": {"code": "NETWORK_ERROR"},
                                      "retry": retry})
    assert listed["executionState"]["a"]["attempts"] == 3
    assert unlisted["executionState"]["a"]["attempts"] == 1


def test_blocked_destination_is_never_retried():
    out = run_nodes("root>a", a={"type": "t-fail", "payload": {"code": "BLOCKED_DESTINATION"},
                                 "retry": {"retryOn": ["BLOCKED_DESTINATION"]}})
    assert out["executionState"]["a"]["attempts"] == 1


def test_backoff_waits_grow_and_are_capped(test_nodes):
    out = run_engine({"definition": definition("root>a", a={
        "type": "t-flaky", "payload": {"failures": 3},
        "retry": {"maxAttempts": 4, "initialDelayMs": 40, "backoffRate": 3,
                  "maxDelayMs": 100}})}, run_id="run_backoff")
    assert out["executionState"]["a"]["attempts"] == 4
    times = test_nodes.attempt_times["run_backoff/a"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # waits: min(40·3^0, 100)=40, min(40·3^1, 100)=100, min(40·3^2, 100)=100 ms
    assert gaps[0] >= 0.040 and gaps[1] >= 0.100 and gaps[2] >= 0.100
    assert gaps[2] < 0.300, "maxDelayMs did not cap the wait (uncapped it is 360 ms)"


def test_no_retry_is_started_after_the_run_deadline():
    started = time.monotonic()
    out = run_engine({"definition": definition("root>a", a={
        "type": "t-flaky", "payload": {"failures": 5},
        "retry": {"maxAttempts": 5, "initialDelayMs": 5000}}), "timeoutMs": 1000})
    assert time.monotonic() - started < 1.0  # it did not wait for the deadline either
    node = out["executionState"]["a"]
    assert node["attempts"] == 1 and node["error"]["code"] == "NETWORK_ERROR"
    assert out["error"]["code"] == "NODE_FAILED"


# -- if branches -------------------------------------------------------------------

def branching(price: int) -> dict:
    return run_nodes(
        "root>check", "check>alert", "check>fine", "alert>notify", "fine>archive",
        "notify>merge", "archive>merge", payload={"price": price},
        check={"type": "if", "payload": {"condition": {
            "$and": [{"{{root.result.price}}": {"$lte": 2000}}]}}},
        alert={"type": "t-echo", "branch": "then"}, fine={"type": "t-echo", "branch": "else"},
        notify={"type": "t-echo"}, archive={"type": "t-echo"}, merge={"type": "t-echo"})


def test_untaken_branch_is_skipped_down_to_its_descendants():
    out = branching(1500)
    assert out["executionState"]["check"]["result"] == {"branch": "then"}
    assert states(out) == {
        "root": ("success", None), "check": ("success", None), "alert": ("success", None),
        "fine": ("skipped", "branch_not_taken"), "notify": ("success", None),
        "archive": ("skipped", "branch_not_taken"), "merge": ("success", None)}
    assert out["executionState"]["merge"]["attempts"] == 1
    assert out["status"] == "success"
    other = branching(2500)
    assert states(other)["alert"] == ("skipped", "branch_not_taken")
    assert states(other)["archive"] == ("success", None)


def test_a_join_of_only_untaken_branches_is_skipped():
    out = run_nodes("root>check", "check>a", "check>b", "a>j", payload={"x": 1},
                    check={"type": "if", "payload": {"condition": {"$or": []}}},
                    a={"type": "t-echo", "branch": "then"},
                    b={"type": "t-echo", "branch": "else"}, j={"type": "t-echo"})
    assert states(out)["j"] == ("skipped", "branch_not_taken")
    assert states(out)["b"] == ("success", None)


def test_an_input_that_would_copy_a_result_thousands_of_times_is_refused():
    copies = " ".join(["{{root.result.big}}"] * 2000)  # 40 kB of payload, 200 MB resolved
    out = run_nodes("root>a", payload={"big": "x" * 100_000},
                    a={"type": "t-echo", "payload": {"value": copies}})
    node = out["executionState"]["a"]
    assert node["error"]["code"] == "INVALID_INPUT" and "exceed" in node["error"]["message"]
    assert "input" not in node


def test_the_run_deadline_decides_even_when_the_scheduler_is_slow(monkeypatch):
    # Under load the scheduling thread can be paused between reading the clock and
    # setting an attempt's limit; the run deadline must still be the one that ends it.
    from app import engine

    real = engine.limit_ms
    monkeypatch.setattr(engine, "limit_ms", lambda node, data: (
        time.sleep(0.005), real(node, data))[1])
    out = run_engine({"definition": definition("root>slow", "slow>after",
                                               slow={"type": "t-hang"},
                                               after={"type": "t-echo"}), "timeoutMs": 50})
    assert out["error"]["code"] == "RUN_TIMEOUT"
    assert states(out)["after"] == ("skipped", "run_timeout")


@pytest.mark.parametrize("room", [0, -1])
def test_nodes_reading_one_result_each_spend_its_whole_size(room):
    """A value several inputs read is measured once per run, and each input still spends
    its whole size: at a limit of exactly two copies, reading it twice fits; one
    character less, every node that reads it twice fails, and one reading it once not."""
    items = [{"name": "x" * 40, "qty": n} for n in range(20)]
    size = len(json.dumps(items, separators=(",", ":")))
    twice = {"type": "format", "payload": {"data": "{{root.result.items}}", "template": "t",
                                          "again": "{{root.result.items}}"}}
    once = {"type": "format", "payload": {"data": "{{root.result.items}}", "template": "t"}}
    body = {"definition": definition("root>a", "root>b", "root>c", a=twice, b=twice, c=once),
            "payload": {"items": items}}
    state = run_engine(body, settings={"MAX_INPUT_CHARS": 2 * size + room})["executionState"]
    assert state["c"]["status"] == "success"
    for node in ("a", "b"):
        assert state[node]["status"] == ("success" if room == 0 else "failure"), state[node]
        if room:
            assert "would exceed" in state[node]["error"]["message"]
