"""for-each loops (SPEC §11): validation of bodies and loop variables, then running them
through the engine's entry point."""
from __future__ import annotations

import time
from datetime import datetime

import pytest

from app.engine import Run
from app.redact import Redactor
from app.validation import Invalid, Limits, check_request
from tests.helpers import definition, run_engine


def log(message: str, **extra) -> dict:
    return {"type": "log", "payload": {"message": message}, **extra}


def loop(array, *body: str, **payload) -> dict:
    return {"type": "for-each", "payload": {"array": array, **payload}, "loopBody": list(body)}


def problems(body: dict, limits: Limits | None = None) -> tuple[int, dict]:
    with pytest.raises(Invalid) as caught:
        check_request(body, limits or Limits())
    return caught.value.code, caught.value.errors


def states(out: dict) -> dict:
    return {k: (v["status"], v.get("reason")) for k, v in out["executionState"].items()}


# -- validation ------------------------------------------------------------------------

def test_a_loop_and_its_body_are_checked_and_planned():
    body = {"definition": definition(
        "root>each", "check>cheap",
        each={**loop("{{root.result.items}}", "check"), "children": ["after"]},
        check={"type": "if", "payload": {"condition": {"{{$item.price}}": {"$lt": 10}}},
               "children": []},
        cheap=log("#{{$index}} {{$item.name}} {{check.result.branch}}", branch="then"),
        after=log("{{each.result.iterationCount}}"))}
    plan = check_request(body, Limits()).plan
    assert plan.levels == [["root"], ["each"], ["after"]]  # bodies are not levels
    assert plan.loops == {"each": {"body": ["check", "cheap"], "depth": 1}}
    assert plan.nodes["cheap"].loop == "each" and plan.nodes["cheap"].level == 3
    assert plan.worst_case_cu == 2  # the loop and "after": bodies reserve when they start


def test_body_nodes_are_reached_only_from_their_loop():
    nodes = {"each": loop([1], "a"), "a": log("{{$item}}")}
    _, errors = problems({"definition": definition("root>each", "root>a", **nodes)})
    [message] = errors["definition.nodes.root.children[1]"]
    assert "in the body of loop 'each'" in message
    # ...and a body node's children stay in the body
    _, errors = problems({"definition": definition(
        "root>each", "root>out", "a>out", each=loop([1], "a"), a=log("x"), out=log("y"))})
    assert "definition.nodes.root.children[1]" in errors
    assert "through 'a'" in errors["definition.nodes.root.children[1]"][0]


def test_a_body_cannot_lead_back_to_its_loop():
    _, errors = problems({"definition": definition(
        "root>each", "a>each", each=loop([1], "a"), a=log("x"))})
    assert "cannot lead back to its loop" in errors["definition.nodes.a.children[0]"][0]


def test_loop_body_entries_are_checked_where_they_are_listed():
    _, errors = problems({"definition": definition(
        "root>each", each=loop([1], "nope", "each", "root", "a", "a"), a=log("x"))})
    assert set(errors) >= {f"definition.nodes.each.loopBody[{i}]" for i in (0, 1, 2, 4)}
    _, errors = problems({"definition": definition("root>each", each=loop([1]))})
    assert "Required on a for-each node" in errors["definition.nodes.each.loopBody"][0]
    _, errors = problems({"definition": definition("root>a", a={**log("x"), "loopBody": []})})
    assert errors["definition.nodes.a.loopBody"] == ["Only allowed on a for-each node."]


def test_a_node_belongs_to_one_loop():
    _, errors = problems({"definition": definition(
        "root>l1", "root>l2", l1=loop([1], "a"), l2=loop([1], "a"), a=log("x"))})
    assert "in the bodies of loops" in errors["definition.nodes.a"][0]


def test_loops_nest_at_most_ten_deep():
    nodes, edges = {}, ["root>l0"]
    for depth in range(11):
        nodes[f"l{depth}"] = loop([1], f"l{depth + 1}" if depth < 10 else "leaf")
    nodes["leaf"] = log("{{$item}}")
    code, errors = problems({"definition": definition(*edges, **nodes)}, Limits(max_nodes=30))
    assert code == 400228
    assert errors == {"definition.nodes.l10.loopBody": [
        "Loops nest at most 10 deep; this one is 11 deep."]}
    del nodes["l10"]
    nodes["l9"] = loop([1], "leaf")
    check_request({"definition": definition(*edges, **nodes)}, Limits(max_nodes=30))


def test_loop_variables_are_read_only_inside_a_body():
    _, errors = problems({"definition": definition(
        "root>each", "root>out", each=loop("{{$item}}", "a"),
        a=log("{{$parent_item}} {{$for.other.item}} {{$for.each.index}} {{$for.each}}"),
        out=log("{{$index}} {{a.result.message}}"))})
    assert errors["definition.nodes.each.payload.array"] == [
        "{{$item}}: $item is only defined inside a loop's body (a for-each node's loopBody)."]
    assert errors["definition.nodes.a.payload.message"] == [
        "{{$parent_item}}: $parent_item is only defined inside a loop that is itself in a "
        "loop's body.",
        "{{$for.other.item}}: loop 'other' does not hold node 'a' in its body.",
        "{{$for.each}}: '$for' needs a loop id, then item or index ($for.<loopId>.item)."]
    assert errors["definition.nodes.out.payload.message"] == [
        "{{$index}}: $index is only defined inside a loop's body (a for-each node's loopBody).",
        "{{a.result.message}}: node 'a' is in the body of loop 'each' and has a result per "
        "iteration; after the loop, read {{each.result.iterations}}."]


def test_a_loop_refuses_its_own_time_limit_and_retries_and_a_long_literal_array():
    _, errors = problems({"definition": definition(
        "root>each", each={**loop(list(range(101)), "a"), "timeoutMs": 10, "retry": {}},
        a=log("x"))})
    assert set(errors) == {"definition.nodes.each.timeoutMs", "definition.nodes.each.retry",
                           "definition.nodes.each.payload.array"}
    assert errors["definition.nodes.each.payload.array"] == [
        "At most 100 items; this array has 101."]


def test_the_node_limit_counts_body_nodes_once():
    nodes = {f"b{i}": log("{{$item}}") for i in range(18)}
    edges = [f"b{i}>b{i + 1}" for i in range(17)]
    body = {"definition": definition("root>each", *edges, each=loop([1], "b0"), **nodes)}
    check_request(body, Limits())  # 20 nodes
    nodes["b18"] = log("x")
    _, errors = problems({"definition": definition(
        "root>each", *edges, "b17>b18", each=loop([1], "b0"), **nodes)})
    assert "at most 20 nodes" in errors["definition.nodes"][0]


# -- running ---------------------------------------------------------------------------

def fan(items, concurrency=1, on_error="stop", **more) -> dict:
    nodes = {"each": {**loop(items, "a", concurrency=concurrency, onItemError=on_error),
                      "children": ["after"]},
             "a": {"type": "t-echo", "payload": {"value": "{{$item}}"}},
             "b": log("{{$index}}:{{a.result.value}}"),
             "after": log("{{each.result.iterationCount}} {{each.result.status}}"), **more}
    return {"definition": definition("root>each", "a>b", **nodes)}


def test_each_item_runs_the_body_and_the_loop_result_collects_it(test_nodes):
    out = run_engine(fan(["x", "y", "z"]))
    assert out["status"] == "success"
    run = out["executionState"]
    assert list(run) == ["root", "each", "a[0]", "b[0]", "a[1]", "b[1]", "a[2]", "b[2]",
                         "after"]
    assert run["b[1]"]["result"]["message"] == "1:y"
    assert (run["b[2]"]["iteration"], run["b[2]"]["loop"], run["b[2]"]["level"]) == (
        2, "each", 3)
    result = run["each"]["result"]
    assert result["iterationCount"] == 3 and result["lastAdvancedIteration"] == 2
    assert result["status"] == "completed"
    assert [i["status"] for i in result["iterations"]] == ["success"] * 3
    assert result["iterations"][0]["results"]["a"]["value"] == "x"
    assert result["iterations"][0]["results"]["b"]["message"] == "0:x"
    assert run["after"]["result"]["message"] == "3 completed"
    assert out["totalCu"] == 1 + 3 * 2 + 1  # the loop, every instance, "after"


def test_an_empty_array_runs_nothing_and_lists_the_body_once(test_nodes):
    out = run_engine(fan([]))
    assert out["status"] == "success"
    assert states(out) == {"root": ("success", None), "each": ("success", None),
                           "a": ("skipped", "no_iterations"), "b": ("skipped", "no_iterations"),
                           "after": ("success", None)}
    assert out["executionState"]["each"]["result"] == {
        "iterations": [], "iterationCount": 0, "lastAdvancedIteration": -1,
        "status": "completed"}


def test_a_skipped_loop_lists_its_body_skipped_for_the_same_reason(test_nodes):
    out = run_engine({"definition": definition(
        "root>bad", "bad>each", "a>b", bad={"type": "t-fail"}, each=loop([1], "a"),
        a={"type": "t-echo"}, b=log("x"))})
    assert states(out)["a"] == states(out)["b"] == ("skipped", "upstream_failed")


def test_on_item_error_stop_starts_no_new_iteration_and_fails_the_loop(test_nodes):
    body = fan([1, 2, 3, 4], b={"type": "t-fail-if", "payload": {
        "fail": "{{a.result.value}}", "equals": 2}})
    body["definition"]["nodes"]["a"]["children"] = ["b"]
    out = run_engine(body)
    run = out["executionState"]
    assert out["status"] == "failure" and out["error"]["code"] == "NODE_FAILED"
    assert run["each"]["status"] == "failure"
    assert run["each"]["error"]["code"] == "ITERATION_FAILED"
    assert run["each"]["error"]["message"].startswith("Iteration 1 failed: node 'b[1]' failed")
    result = run["each"]["result"]  # kept: which iterations ran, and how
    assert [i["status"] for i in result["iterations"]] == [
        "success", "failure", "skipped", "skipped"]
    assert result["status"] == "stopped" and result["lastAdvancedIteration"] == 1
    assert "a[2]" not in run and run["after"]["reason"] == "upstream_failed"


def test_on_item_error_continue_runs_every_item_and_succeeds(test_nodes):
    body = fan([1, 2, 3], on_error="continue", b={"type": "t-fail-if", "payload": {
        "fail": "{{a.result.value}}", "equals": 2}})
    out = run_engine(body)
    run = out["executionState"]
    assert run["each"]["status"] == "success"
    assert [i["status"] for i in run["each"]["result"]["iterations"]] == [
        "success", "failure", "success"]
    assert run["each"]["result"]["iterations"][1]["results"]["b"] is None
    assert run["b[1]"]["status"] == "failure"
    # The loop reports the failed item in its iterations: the run succeeds.
    assert out["status"] == "success" and out["error"] is None


def test_a_failure_inside_a_stopping_loop_is_absorbed_by_a_continuing_loop_around_it(
        test_nodes):
    out = run_engine({"definition": definition(
        "root>outer", outer=loop([[1, 2], [3]], "inner", onItemError="continue"),
        inner=loop("{{$item}}", "check"),
        check={"type": "t-fail-if", "payload": {"fail": "{{$item}}", "equals": 2}})})
    run = out["executionState"]
    assert run["inner[0]"]["error"]["code"] == "ITERATION_FAILED"
    assert [i["status"] for i in run["outer"]["result"]["iterations"]] == [
        "failure", "success"]
    assert out["status"] == "success"
    out = run_engine({"definition": definition(
        "root>outer", outer=loop([[1, 2], [3]], "inner"), inner=loop("{{$item}}", "check"),
        check={"type": "t-fail-if", "payload": {"fail": "{{$item}}", "equals": 2}})})
    assert out["status"] == "failure"
    assert out["executionState"]["outer"]["error"]["code"] == "ITERATION_FAILED"


def test_iterations_run_concurrency_at_a_time_in_item_order(test_nodes):
    body = {"definition": definition(
        "root>each", each=loop(list(range(6)), "wait", concurrency=3),
        wait={"type": "delay", "payload": {"delayMs": 100}})}
    started = time.monotonic()
    out = run_engine(body)
    elapsed = time.monotonic() - started
    run = out["executionState"]
    starts = [datetime.fromisoformat(run[f"wait[{i}]"]["startedAt"]) for i in range(6)]
    assert starts == sorted(starts)
    gaps = [(later - starts[0]).total_seconds() for later in starts]
    assert max(gaps[:3]) < 0.05 and min(gaps[3:]) >= 0.09  # three at once, then three
    assert elapsed < 0.6  # two rounds of 100 ms, not six (a bound, not a benchmark)


def test_nested_loops_read_their_own_and_their_parents_items(test_nodes):
    out = run_engine({"definition": definition(
        "root>outer", outer=loop([["a", "b"], ["c"]], "inner"),
        inner=loop("{{$item}}", "say"),
        say=log("{{$parent_index}}.{{$index}} {{$item}} of {{$for.outer.item}}"))})
    run = out["executionState"]
    assert out["status"] == "success"
    assert list(run) == ["root", "outer", "inner[0]", "say[0][0]", "say[0][1]",
                         "inner[1]", "say[1][0]"]
    assert run["say[0][1]"]["result"]["message"] == '0.1 b of ["a","b"]'
    assert (run["say[1][0]"]["iteration"], run["say[1][0]"]["loop"]) == (0, "inner")
    inner = run["outer"]["result"]["iterations"][1]["results"]["inner"]
    assert inner["iterations"][0]["results"]["say"]["message"] == '1.0 c of ["c"]'


def test_a_nested_loop_that_runs_no_iteration_lists_its_body_per_outer_iteration(test_nodes):
    out = run_engine({"definition": definition(
        "root>outer", outer=loop([[], ["x"]], "inner"), inner=loop("{{$item}}", "say"),
        say=log("{{$item}}"))})
    assert states(out)["say[0]"] == ("skipped", "no_iterations")
    assert states(out)["say[1][0]"] == ("success", None)


def test_a_resolved_array_too_long_or_not_an_array_fails_the_loop(test_nodes):
    for items, why in ((list(range(101)), "At most 100 items"), ("text", "Not a valid array")):
        out = run_engine({"definition": definition(
            "root>each", each=loop("{{root.result.items}}", "a"), a=log("x")),
            "payload": {"items": items}})
        node = out["executionState"]["each"]
        assert node["error"]["code"] == "INVALID_INPUT" and why in node["error"]["message"]
        assert states(out)["a"] == ("skipped", "upstream_failed")
        assert out["totalCu"] == 1


def test_more_than_ten_thousand_body_instances_fail_the_loop_that_would_pass_them(test_nodes):
    body = {"definition": definition(
        "root>outer", "s0>s1", outer=loop(list(range(100)), "inner"),
        inner=loop(list(range(100)), "s0"), s0={"type": "t-echo"}, s1={"type": "t-echo"})}
    out = run_engine(body)
    run = out["executionState"]
    # 100 inner loops (100 instances), then each inner loop 100 × 2: the 50th passes 10,000.
    failed = [k for k, v in run.items() if v.get("error", {}).get("code") == "INVALID_INPUT"]
    assert failed and failed[0] == "inner[49]"
    assert "the limit is 10000" in run["inner[49]"]["error"]["message"]
    assert sum(k.startswith("s0[") and v["status"] == "success" for k, v in run.items()) <= \
        10_000 // 2


def test_a_loop_that_cannot_reserve_its_items_fails_before_any_iteration(test_nodes):
    asked = []

    def reserve(cu: int) -> bool:
        asked.append(cu)
        return False

    request = check_request(fan([1, 2, 3]), Limits())
    out = Run(request, "run_test", reserve=reserve).execute()
    node = out["executionState"]["each"]
    assert asked == [3 * 2]  # items × body nodes × their attempts
    assert node["error"]["code"] == "INSUFFICIENT_CU"
    assert states(out)["a"] == ("skipped", "upstream_failed")
    assert out["totalCu"] == 1


def test_the_deadline_stops_a_loop_and_its_iterations(test_nodes):
    out = run_engine({**fan([1, 2, 3], b={"type": "t-hang"}), "timeoutMs": 200},
                     deadline_ms=200)
    run = out["executionState"]
    assert out["error"]["code"] == "RUN_TIMEOUT"
    assert run["each"]["status"] == "failure" and run["each"]["error"]["code"] == "TIMEOUT"
    assert run["b[0]"]["error"]["code"] == "TIMEOUT"
    assert "a[1]" not in run and run["after"]["reason"] == "run_timeout"


def test_body_instances_are_redacted_like_any_node(test_nodes):
    request = check_request({"definition": definition(
        "root>each", each=loop("{{root.result.keys}}", "a"),
        a=log("key={{$item}}")), "payload": {"keys": ["key-761"], "apiKey": "key-761"}},
        Limits())
    out = Run(request, "run_test", redactor=Redactor.for_request(request)).execute()
    assert out["executionState"]["a[0]"]["result"]["message"] == "key=[redacted]"
    assert "key-761" not in str(out)


# -- through the API: the ledger, the stored run, the B3OS mount ----------------------------

def token(app, name: str, balance: int) -> dict:
    app.extensions["store"].create_token(name, balance, secret=f"{name}-secret")
    return {"Authorization": f"Bearer {name}-secret"}


def balance(app, name: str) -> int:
    return next(t.balance for t in app.extensions["store"].tokens() if t.name == name)


def test_a_loop_reserves_its_items_when_it_starts_and_is_charged_what_ran(app, client):
    body = {"definition": definition(
        "root>each", "a>b", each=loop("{{root.result.items}}", "a"),
        a=log("{{$item}}"), b=log("{{a.result.message}}")), "payload": {"items": [1, 2, 3]}}
    headers = token(app, "exact", 7)  # the loop, then 3 × 2 instances: 7 in all
    answer = client.post("/v1/runs/sync", json=body, headers=headers)
    assert answer.status_code == 200 and answer.json["status"] == "success"
    assert answer.json["totalCu"] == 7 and balance(app, "exact") == 0
    stored = client.get(f"/v1/runs/{answer.json['runId']}", headers=headers)
    assert stored.get_data() == answer.get_data()

    headers = token(app, "short", 6)  # the loop's attempt, then 6 more than are left
    answer = client.post("/v1/runs/sync", json=body, headers=headers)
    node = answer.json["executionState"]["each"]
    assert node["error"]["code"] == "INSUFFICIENT_CU"
    assert answer.json["totalCu"] == 1 and balance(app, "short") == 5  # nothing held back


def test_loops_run_under_the_b3os_mount_and_validate_reports_them(app, client):
    from tests.helpers import DEV_AUTH

    body = {"definition": definition("root>each", each=loop([1, 2], "a"), a=log("{{$item}}"))}
    answer = client.post("/b3os/v1/runs/sync", json=body, headers=DEV_AUTH)
    assert answer.json["code"] == 0
    assert answer.json["data"]["executionState"]["a[1]"]["result"]["message"] == "2"
    checked = client.post("/v1/workflows/validate", json=body, headers=DEV_AUTH)
    assert checked.json == {"valid": True, "nodeCount": 3, "levels": [["root"], ["each"]],
                            "loops": {"each": {"body": ["a"], "depth": 1}}, "warnings": {}}


def test_a_loop_whose_results_outgrow_their_cap_starts_no_more_iterations(test_nodes):
    body = {"definition": definition(
        "root>each", each=loop(list(range(50)), "big"),
        big={"type": "t-big", "payload": {"failures": 300}})}
    request = check_request(body, Limits())
    out = Run(request, "run_test", settings={"MAX_RESULT_CHARS": 1000}).execute()
    node = out["executionState"]["each"]
    assert node["error"]["code"] == "OUTPUT_TOO_LARGE"
    assert "stopped after 4 of 50 iterations" in node["error"]["message"]
    assert sum(k.startswith("big[") for k in out["executionState"]) == 4


def test_a_loop_stops_once_the_run_answer_is_past_its_cap(test_nodes):
    body = {"definition": definition(
        "root>each", each=loop(list(range(50)), "big"),
        big={"type": "t-big", "payload": {"failures": 300}})}
    request = check_request(body, Limits())
    out = Run(request, "run_test", settings={"MAX_RUN_CHARS": 3000}).execute()
    assert out["error"]["code"] == "RUN_TOO_LARGE"
    assert out["executionState"]["each"]["error"]["code"] == "OUTPUT_TOO_LARGE"
    assert sum(k.startswith("big[") for k in out["executionState"]) < 15


def test_a_run_holds_at_most_max_pooled_pool_threads_at_once(test_nodes, monkeypatch):
    from app import engine

    monkeypatch.setattr(engine, "MAX_POOLED", 2)
    out = run_engine({"definition": definition(
        "root>each", each=loop(list(range(4)), "wait", concurrency=4),
        wait={"type": "delay", "payload": {"delayMs": 100}})})
    starts = [datetime.fromisoformat(out["executionState"][f"wait[{i}]"]["startedAt"])
              for i in range(4)]
    assert out["status"] == "success"
    gaps = [(later - starts[0]).total_seconds() for later in starts[1:]]
    assert gaps[0] < 0.05 and gaps[1] >= 0.09 and gaps[2] >= 0.09  # two at a time
