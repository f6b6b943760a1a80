"""A pool thread that ends a pooled attempt while the scheduling thread waits does that
thread's work in its place and runs a ready successor itself (app/engine.py,
``_ended_on_pool``): a chain of pooled nodes pays no hand-off between threads per node,
and every rule of the engine holds however the work is shared."""
from __future__ import annotations

import json
import time

import pytest

from app import engine
from app.engine import Run
from app.pool import ElasticPool
from app.validation import Limits, check_request
from tests.helpers import definition

pytestmark = pytest.mark.usefixtures("test_nodes")


def make_run(body: dict, **options) -> Run:
    return Run(check_request(body, Limits()), "run_chain", **options)


def chain(*types: dict, timeout_ms: int = 10_000) -> dict:
    """root > n1 > n2 > …, node ``n<i>`` as ``types[i - 1]``."""
    ids = [f"n{i}" for i in range(1, len(types) + 1)]
    edges = [f"{a}>{b}" for a, b in zip(["root", *ids], ids, strict=False)]
    return {"definition": definition(*edges, **dict(zip(ids, types, strict=True))),
            "timeoutMs": timeout_ms}


class CountingPool(ElasticPool):
    def __init__(self):
        super().__init__()
        self.submitted = 0

    def submit(self, fn, *args, cancelled=None):
        self.submitted += 1
        super().submit(fn, *args, cancelled=cancelled)


@pytest.fixture
def counting_pool(monkeypatch):
    fresh = CountingPool()
    monkeypatch.setattr(engine, "pool", lambda: fresh)
    return fresh


def test_a_chain_of_pooled_nodes_is_handed_to_the_pool_once(counting_pool):
    out = make_run(chain(*[{"type": "t-echo", "payload": {"value": i}} for i in range(6)])
                   ).execute()
    assert out["status"] == "success"
    assert [out["executionState"][f"n{i}"]["result"]["value"] for i in range(1, 7)] == \
        list(range(6))
    assert counting_pool.submitted == 1  # n1; each later node ran on its parent's thread


def test_siblings_started_on_a_pool_thread_each_get_a_thread():
    # n1 ends on a pool thread and makes both barrier nodes ready: one runs there, the
    # other on a thread of its own, or neither would pass the two-party barrier.
    out = make_run({"definition": definition(
        "root>n1", "n1>a", "n1>b", n1={"type": "t-echo"}, a={"type": "t-meet"},
        b={"type": "t-meet"})}).execute()
    assert out["status"] == "success", out["error"]


def test_an_attempt_started_on_a_pool_thread_times_out_at_its_own_limit():
    # The scheduling thread waits until n1's limit; n2's, set after, is earlier.
    started = time.monotonic()
    out = make_run(chain({"type": "t-echo"}, {"type": "t-hang", "timeoutMs": 200})).execute()
    elapsed = time.monotonic() - started
    assert out["executionState"]["n2"]["error"]["code"] == "TIMEOUT"
    assert out["error"]["code"] == "NODE_FAILED"
    assert 0.2 <= elapsed < 2, elapsed


def test_a_retry_set_on_a_pool_thread_starts_on_time(test_nodes):
    started = time.monotonic()
    out = make_run(chain({"type": "t-echo"}, {
        "type": "t-flaky", "payload": {"failures": 1},
        "retry": {"maxAttempts": 2, "initialDelayMs": 100}})).execute()
    assert out["status"] == "success"
    first, second = test_nodes.attempt_times["run_chain/n2"]
    assert 0.1 <= second - first < 1.0
    assert time.monotonic() - started < 2


def test_a_pooled_successor_inline_after_a_pooled_node_runs_in_order():
    out = make_run(chain({"type": "t-echo", "payload": {"value": 1}},
                         {"type": "t-echo-inline", "payload": {"value": "{{n1.result.value}}"}},
                         {"type": "t-echo", "payload": {"value": "{{n2.result.value}}"}})
                   ).execute()
    assert out["status"] == "success"
    assert out["executionState"]["n3"]["result"]["value"] == 1
    assert out["totalCu"] == 3


def test_a_streamed_run_gets_each_event_when_it_happens():
    run = make_run(chain({"type": "t-echo"}, {"type": "delay", "payload": {"delayMs": 400}}),
                   stream=True)
    started, seen = time.monotonic(), []
    for _ in run.passes():
        seen.extend((time.monotonic() - started, name, json.loads(data)["nodeId"])
                    for name, data in run.events)
        run.events = []
    assert [(name, node) for _, name, node in seen] == [
        ("node.finished", "root"), ("node.started", "n1"), ("node.finished", "n1"),
        ("node.started", "n2"), ("node.finished", "n2")]
    # n2 started on n1's pool thread; the stream has it then, not when n2 ends.
    assert seen[3][0] < 0.3, seen
    assert seen[4][0] >= 0.4


def test_what_fails_on_a_pool_thread_doing_the_runs_work_is_raised_by_the_run():
    calls = []

    def on_progress(attempts):
        calls.append(attempts)
        if len(calls) == 2:  # n2 starting, on n1's thread
            raise RuntimeError("store away")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="store away"):
        make_run(chain({"type": "t-echo"}, {"type": "t-echo"}),
                 on_progress=on_progress).execute()
    assert time.monotonic() - started < 2
    assert calls == [1, 2]


def test_the_watchdog_watches_a_successor_run_on_its_parents_thread(test_nodes,
                                                                   monkeypatch):
    fresh = ElasticPool()
    stuck = []
    monkeypatch.setattr(engine, "pool", lambda: fresh)
    monkeypatch.setattr("app.pool.on_stuck", lambda: stuck.append(time.monotonic()))
    # n1's thread starts both children, runs one itself (busy) and hands quick to the
    # pool: the flag to watch is busy's own, not one of those of n1 or quick.
    out = make_run({"definition": definition(
        "root>n1", "n1>quick", "n1>busy", n1={"type": "t-echo"}, quick={"type": "t-echo"},
        busy={"type": "t-busy", "payload": {"failures": 4}}), "timeoutMs": 100}).execute()
    answered = time.monotonic()
    assert out["error"]["code"] == "RUN_TIMEOUT"
    deadline = time.monotonic() + 5
    while not stuck and time.monotonic() < deadline:
        time.sleep(0.05)
    test_nodes.release.set()  # let the busy thread go
    assert stuck and fresh.stuck
    assert 1.0 <= stuck[0] - answered < 3.0
