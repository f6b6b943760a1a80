"""The delay node: waits, and stops at once at its attempt's limit or the run deadline."""
from __future__ import annotations

import threading
import time

import pytest

from app.nodes import delay
from app.nodes.base import NodeContext, NodeError
from tests.helpers import definition, post_run, run_engine, run_nodes


def context(seconds: float = 10.0) -> NodeContext:
    return NodeContext(run_id="run_test", node_id="wait", deadline=time.monotonic() + seconds)


def test_delay_waits_then_completes():
    started = time.monotonic()
    out = delay.run(delay.Payload().load({"delayMs": 50}), context())
    assert out == {"status": "completed", "delayedMs": 50}
    assert time.monotonic() - started >= 0.045


def test_delay_zero_completes():
    assert delay.run({"delayMs": 0}, context()) == {"status": "completed", "delayedMs": 0}


def test_delay_stops_as_soon_as_cancelled():
    # The engine sets ``cancelled`` at the run deadline; time.sleep would not notice.
    ctx = context(seconds=60)
    threading.Timer(0.1, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        delay.run({"delayMs": 30_000}, ctx)
    assert caught.value.code == "TIMEOUT" and caught.value.retryable is True
    assert time.monotonic() - started < 5


def test_delay_longer_than_its_limit_fails_when_the_limit_passes():
    started = time.monotonic()
    with pytest.raises(NodeError) as caught:
        delay.run({"delayMs": 10_000}, context(seconds=0.2))
    elapsed = time.monotonic() - started
    assert caught.value.code == "TIMEOUT" and caught.value.retryable is True
    assert 0.15 <= elapsed < 5  # not before the limit, and not the whole delay


@pytest.mark.parametrize("payload", [
    {}, {"delayMs": -1}, {"delayMs": 60_001}, {"delayMs": "100"}, {"delayMs": 1.5},
    {"delayMs": True}, {"delayMs": None},
])
def test_delay_schema_rejects(payload):
    assert "delayMs" in delay.Payload().validate(payload)


def test_delay_schema_accepts_the_bounds():
    assert delay.Payload().validate({"delayMs": 0}) == {}
    assert delay.Payload().validate({"delayMs": 60_000}) == {}


def test_delay_is_not_inline():
    # Inline handlers run on the scheduling thread, which must never sleep.
    assert not delay.NODE.inline and delay.NODE.inline_when is None


# -- through the engine and HTTP ------------------------------------------------


def test_delay_result_feeds_later_nodes():
    out = run_nodes("root>wait", "wait>say",
                    wait={"type": "delay", "payload": {"delayMs": "{{root.result.ms}}"}},
                    say={"type": "log", "payload": {"message": "{{wait.result.delayedMs}}"}},
                    payload={"ms": 20})
    assert out["status"] == "success", out["error"]
    assert out["executionState"]["wait"]["result"] == {"status": "completed", "delayedMs": 20}
    assert out["executionState"]["say"]["result"]["message"] == "20"


def test_delay_cut_by_the_run_deadline():
    body = {"definition": definition("root>wait", "wait>after", wait={
        "type": "delay", "payload": {"delayMs": 10_000}},
        after={"type": "log", "payload": {"message": "never"}}),
        "timeoutMs": 200}
    started = time.monotonic()
    out = run_engine(body)
    assert time.monotonic() - started < 5
    assert out["status"] == "failure"
    assert out["error"]["code"] == "RUN_TIMEOUT"
    wait = out["executionState"]["wait"]
    assert wait["status"] == "failure" and wait["error"]["code"] == "TIMEOUT"
    assert out["executionState"]["after"]["reason"] == "run_timeout"


def test_delay_cut_by_the_node_timeout_and_retried():
    out = run_nodes("root>wait", wait={
        "type": "delay", "payload": {"delayMs": 10_000}, "timeoutMs": 200,
        "retry": {"maxAttempts": 2, "initialDelayMs": 10}})
    wait = out["executionState"]["wait"]
    assert wait["status"] == "failure" and wait["error"]["code"] == "TIMEOUT"
    assert wait["attempts"] == 2  # TIMEOUT is retryable
    assert out["error"]["code"] == "NODE_FAILED"
    assert out["durationMs"] < 5000


def test_delay_resolved_value_out_of_range_is_invalid_input():
    out = run_nodes("root>wait", wait={"type": "delay", "payload": {
        "delayMs": "{{root.result.ms}}"}}, payload={"ms": 70_000})
    wait = out["executionState"]["wait"]
    assert wait["status"] == "failure" and wait["error"]["code"] == "INVALID_INPUT"


@pytest.mark.parametrize("value", [60_001, -5, "100"])
def test_delay_http_literal_out_of_range_is_400(client, value):
    body = {"definition": definition("root>wait", wait={
        "type": "delay", "payload": {"delayMs": value}})}
    response = post_run(client, body)
    assert response.status_code == 400
    assert response.json["code"] == 400228
    assert "definition.nodes.wait.payload.delayMs" in response.json["errors"]
