"""A plan's compiled parts (``PlanNode.resolve_input``, ``PlanNode.load_input``): a run
through the engine's entry point answers as it did when every attempt resolved and
loaded its payload from scratch, and a cached plan serves every run of its definition.
"""
from __future__ import annotations

import functools
import json
import re
from unittest import mock

from hypothesis import HealthCheck, given, settings

from app.dialect import load
from app.engine import Run
from app.expressions import resolve
from app.problems import Invalid
from app.validation import Limits, check_request
from tests.fuzz_strategies import run_bodies
from tests.helpers import definition, run_engine

# Types whose results depend on time or chance (or that start a JavaScript engine; an
# outbound node's own timeout races its refused destination): they become hello-world
# nodes, whose results hold only a timestamp — a fixed one, as the root's triggeredAt
# (see ``answer``).
UNSTEADY = {"code-transform", "delay", "generate-id", "http-request", "send-webhook"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def steady(body: dict) -> dict:
    """``body`` with no node that depends on time or chance, and a deadline no busy
    machine reaches, so two runs of it answer alike."""
    nodes = body["definition"]["nodes"]
    for node in nodes.values():
        node.pop("timeoutMs", None)
        if node.get("type") in UNSTEADY:
            node["type"], node["payload"] = "hello-world", {"name": "steady"}
    if isinstance(body.get("timeoutMs"), int) and not isinstance(body["timeoutMs"], bool):
        body["timeoutMs"] = 30_000
    return body


def uncompiled(plan) -> None:
    """Every node of ``plan`` resolving and loading its payload from scratch, as each
    attempt did before plans were compiled."""
    for node in plan.nodes.values():
        node.__dict__["resolve_input"] = functools.partial(resolve, node.payload)
        node.__dict__["load_input"] = functools.partial(load, node.node_type.payload)


def compiled(plan) -> None:
    for node in plan.nodes.values():
        node.__dict__.pop("resolve_input", None)
        node.__dict__.pop("load_input", None)


FIXED_TIME = "2000-01-01T00:00:00.000Z"


def answer(request, run_id: str) -> dict:
    """The run's answer, its times left out (they differ from run to run). The times a
    node can read (the root's ``triggeredAt``, a hello-world's ``timestamp``) are fixed:
    a generated regex or condition over their digits would answer differently in the
    next millisecond."""
    with mock.patch("app.engine.iso", lambda _epoch: FIXED_TIME), \
            mock.patch("app.nodes.hello_world.iso_now", lambda: FIXED_TIME):
        text = Run(request, run_id, settings={}).run().text
    out = json.loads(ISO.sub("T", text))
    out.pop("durationMs")
    for state in out["executionState"].values():
        state.pop("durationMs", None)
        for attempt in state.get("attemptLog", ()):
            attempt.pop("durationMs")
    if out["error"]:  # which failed node came first is a matter of milliseconds
        out["error"] = out["error"]["code"]
    return out


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(body=run_bodies())
def test_a_compiled_plan_answers_as_payloads_resolved_from_scratch(body):
    try:
        request = check_request(steady(body), Limits())
    except Invalid:
        return  # refused alike: validation is the same either way
    uncompiled(request.plan)
    try:
        expected = answer(request, "run_plain")
    finally:
        compiled(request.plan)
    for _ in range(2):  # compiled, then the compiled parts as cached
        got = answer(request, "run_plain")
        for node_id, state in expected["executionState"].items():
            assert got["executionState"].get(node_id) == state, node_id
        assert got == expected


def test_a_cached_plan_reads_each_runs_own_values():
    nodes = definition("root>a", "a>b",
                       a={"type": "pluck", "payload": {"array": "{{root.result.items}}",
                                                       "field": "name"}},
                       b={"type": "format", "payload": {
                           "data": {"names": "{{a.result.values}}", "who": "{{$props.who}}"},
                           "template": "{{@who}}: {{@names}}"}})
    first = check_request({"definition": nodes, "payload": {"items": [{"name": "tea"}]},
                           "propValues": {"who": "ann"}}, Limits())
    second = check_request({"definition": nodes, "payload": {"items": [{"name": "milk"}]},
                            "propValues": {"who": "bob"}}, Limits())
    assert first.plan is second.plan  # one cached plan, one compiled form
    assert Run(first, "run_1").execute()["executionState"]["b"]["result"] == {
        "formatted": 'ann: ["tea"]'}
    assert Run(second, "run_2").execute()["executionState"]["b"]["result"] == {
        "formatted": 'bob: ["milk"]'}


def test_a_loop_body_resolves_its_payload_in_each_iteration():
    out = run_engine({"definition": definition(
        "root>each",
        each={"type": "for-each", "payload": {"array": [1, 2, 3]}, "loopBody": ["say"]},
        say={"type": "log", "payload": {"message": "item {{$item}} of {{$index}}"}})})
    assert [out["executionState"][f"say[{i}]"]["result"]["message"] for i in range(3)] == [
        "item 1 of 0", "item 2 of 1", "item 3 of 2"]


def test_a_rule_broken_only_once_resolved_fails_the_attempt_as_before():
    out = run_engine({"definition": definition(
        "root>a", a={"type": "pluck", "payload": {"array": [], "field": "a",
                                                  "fields": "{{root.result.names}}"}}),
        "payload": {"names": ["b"]}})
    assert out["executionState"]["a"]["error"] == {
        "code": "INVALID_INPUT", "message": "fields: Give 'field' or 'fields', not both.",
        "retryable": False}
