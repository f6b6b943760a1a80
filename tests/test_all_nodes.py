"""One workflow using every node type, end to end through the HTTP API.

http-request and send-webhook reach a real HTTP server on 127.0.0.1, let through
by the operator allow-list (the default configuration would block it).
"""
from __future__ import annotations

import pytest

from app.nodes import NODE_TYPES
from tests.helpers import post_run
from tests.http_support import serve


@pytest.fixture
def local():
    with serve() as server:
        yield server


def test_every_node_type_in_one_workflow(app, client, local):
    app.config["OUTBOUND_ALLOW"] = ["127.0.0.1/32"]
    app.config["MAX_NODES"] = 22  # one of each type, and a loop's body
    nodes = {
        "root": {"type": "manual", "children": ["hello", "fetch", "id", "wait", "low", "high",
                                                "wei", "rx", "js", "keep", "pick", "check",
                                                "each"]},
        "hello": {"type": "hello-world", "payload": {"name": "{{root.result.who}}"}},
        "fetch": {"type": "http-request", "payload": {
            "url": local.url("/items"), "method": "POST", "body": {"q": "{{root.result.who}}"}}},
        "id": {"type": "generate-id", "payload": {"format": "shortid", "length": 6}},
        "wait": {"type": "delay", "payload": {"delayMs": 5}},
        "low": {"type": "list-min", "payload": {"array": "{{root.result.prices}}"}},
        "high": {"type": "list-max", "payload": {"array": "{{root.result.prices}}"}},
        "wei": {"type": "convert-to-wei", "payload": {"value": "1.25", "decimals": 6},
                "children": ["unwei"]},
        "unwei": {"type": "convert-from-wei", "payload": {"wei": "{{wei.result.wei}}",
                                                          "decimals": 6}},
        "rx": {"type": "regex", "payload": {"text": "order #42", "pattern": "#(?P<n>\\d+)"}},
        "js": {"type": "code-transform", "payload": {
            "input": "{{root.result.prices}}",
            "code": "function transform(xs) { return xs.map(Number).reduce((a, b) => a + b); }"}},
        "keep": {"type": "filter", "payload": {"array": "{{root.result.rows}}",
                                               "filter": {"$and": [{"n": {"$gt": 1}}]}}},
        "pick": {"type": "pluck", "payload": {"array": "{{root.result.rows}}", "field": "n"}},
        "check": {"type": "if", "payload": {"condition": {"$and": [
            {"{{root.result.who}}": {"$eq": "Ann"}}]}}, "children": ["yes", "no"]},
        "yes": {"type": "format", "branch": "then", "children": ["hook"], "payload": {
            "data": "{{root.result.rows}}", "template": "n={{@n}}", "separator": ","}},
        "no": {"type": "log", "branch": "else", "payload": {"message": "not Ann"}},
        "hook": {"type": "send-webhook", "children": ["done"], "payload": {
            "url": local.url("/hook"), "body": {"text": "{{yes.result.formatted}}"}}},
        "done": {"type": "log", "payload": {
            "message": "{{yes.result.formatted}} {{hook.result.status}} {{root.result.who}}"}},
        "each": {"type": "for-each", "payload": {"array": "{{root.result.rows}}"},
                 "loopBody": ["say"]},
        "say": {"type": "log", "payload": {"message": "row {{$index}}: n={{$item.n}}"}},
    }
    assert {n["type"] for n in nodes.values()} == set(NODE_TYPES)  # every type is used
    body = {"definition": {"nodes": nodes},
            "payload": {"who": "Ann", "prices": ["3", 1.5, 2], "rows": [{"n": 1}, {"n": 2}]}}
    response = post_run(client, body)
    assert response.status_code == 200, response.json
    run = response.json
    state = {k: v.get("result") for k, v in run["executionState"].items()}
    assert run["status"] == "success", run
    assert state["hello"]["message"] == "Hello, Ann!"
    assert state["fetch"]["status"] == 200
    assert state["fetch"]["json"]["method"] == "POST"
    assert state["fetch"]["json"]["body"] == '{"q":"Ann"}'
    assert len(state["id"]["id"]) == 6
    assert state["wait"] == {"status": "completed", "delayedMs": 5}
    assert (state["low"]["min"], state["high"]["max"]) == (1.5, "3")
    assert state["unwei"] == {"value": "1.25"} and state["wei"] == {"wei": "1250000"}
    assert state["rx"]["matches"]["n"] == "42"
    assert state["js"] == {"output": 6.5}
    assert state["keep"] == {"filtered": [{"n": 2}]}
    assert state["pick"] == {"values": [1, 2]}
    assert state["check"] == {"branch": "then"}
    assert run["executionState"]["no"]["reason"] == "branch_not_taken"
    assert state["hook"]["status"] == "delivered"
    assert sorted(s.path for s in local.seen) == ["/hook", "/items"]
    assert state["done"]["message"] == "n=1,n=2 delivered Ann"
    assert [state["say[0]"]["message"], state["say[1]"]["message"]] == ["row 0: n=1",
                                                                        "row 1: n=2"]
    assert [i["status"] for i in state["each"]["iterations"]] == ["success", "success"]
    # no root, no skipped "no"; "say" twice, once per row
    assert run["totalCu"] == len(nodes) - 2 + 1
    for node_id, result in state.items():
        if result is not None:
            node_type = run["executionState"][node_id]["type"]
            assert _fits(result, NODE_TYPES[node_type].result), node_id


JSON_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": float,
              "boolean": bool, "null": type(None)}


def _fits(result: dict, schema: dict) -> bool:
    """``result`` has the keys, and the top-level JSON types, its type's result schema says."""
    keys, properties = set(result), schema["properties"]
    if not set(schema["required"]) <= keys or (
            not schema["additionalProperties"] and not keys <= set(properties)):
        return False
    for key, rule in properties.items():
        names = rule.get("type", list(JSON_TYPES))
        kinds = tuple(JSON_TYPES[name] for name in ([names] if isinstance(names, str) else names))
        if not isinstance(result[key], kinds) or result[key] not in rule.get("enum", [result[key]]):
            return False
    return True
