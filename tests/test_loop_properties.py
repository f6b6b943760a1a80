"""Properties of ``for-each`` loops (SPEC §11) over random small bodies and item lists.

A body here is a chain or diamond of one to five pure nodes (``log``, ``format``,
``if``, and a short ``delay`` that takes a thread of the pool), whose payloads
read ``$item``, ``$index``, the root's result and the results of earlier body
nodes. Three properties, each through the engine's entry point:

- a loop's iterations are the body run by hand once per item: the body written
  out as a workflow of its own, ``$item`` and ``$index`` replaced by paths into
  the root's payload, which holds that item and index;
- ``concurrency`` changes when iterations run, never what they produce;
- ``totalCu`` is the attempts started: the sum of ``attempts`` over
  ``executionState``.
"""
from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from tests.helpers import run_engine

# No shrinking, as in tests/test_fuzz.py: a body is small enough to read as drawn, and a
# run that hangs costs its whole deadline (``TIMEOUT_MS``) at every step of a shrink.
PROPERTIES = settings(max_examples=200, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow])
TIMEOUT_MS = 2000  # every run here takes milliseconds

BODY_IDS = ("a", "b", "c", "d", "e")
KINDS = ("log", "log", "format", "format", "if", "if", "delay")
FIELD = {"log": "message", "format": "formatted", "if": "branch", "delay": "delayedMs"}
ITEM_TERMS = ("$item", "$item.name", "$item.price", "$item.tags", "$item.tags.0", "$item.0",
              "$index", "root.result.tag", '$item.name || "none"', "$item.price || $index")
TEMPLATES = ("{{@}}", "{{@name}}={{@price}}", "<{{@0}}>", "{{@i.name}} #{{@n}}", "-")
DATA = ("{{$item}}", "{{$item}}", ["{{$item.name}}", "{{$index}}"],
        {"i": "{{$item}}", "n": "{{$index}}"}, "{{$item.tags}}")
RIGHT = {"$lt": (10, 0, "7", "m"), "$gte": (10, 0, "7", "m"), "$eq": (10, "tea", True, None, "7"),
         "$ne": ("then", 0, None), "$exists": (True, False), "$contains": ("a", "e", 1),
         "$in": ([1, "tea", None], ["success", "a"])}  # operator → right-hand sides
RETRY = {"maxAttempts": 2, "initialDelayMs": 0, "retryOn": ["INVALID_INPUT"]}

# Keys and strings that name a moment: what two runs of the same work may differ in.
TIMES = ("startedAt", "finishedAt", "durationMs", "loggedAt", "triggeredAt")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

ITEM = (st.fixed_dictionaries({}, optional={
            "name": st.sampled_from(["tea", "milk", ""]) | st.text(max_size=4),
            "price": st.integers(-5, 20) | st.floats(-50, 50) | st.sampled_from(["7", "x"]),
            "tags": st.lists(st.sampled_from(["a", "b", 1]), max_size=2),
            "wait": st.integers(0, 6)})
        | st.integers(-3, 30) | st.text(max_size=5) | st.none() | st.booleans()
        | st.lists(st.integers(0, 3), max_size=3))
# Zero to six items: hypothesis favours short lists, and the first of a sampled_from.
items = st.sampled_from((3, 1, 5, 0, 2, 6, 4)).flatmap(
    lambda n: st.lists(ITEM, min_size=n, max_size=n))


# -- bodies ------------------------------------------------------------------------------

def term(draw, ancestors: list[str], kinds: dict[str, str]) -> str:
    """A path an expression may hold here: the item, the index, the root, or an ancestor's
    result (or status) in the same iteration."""
    if ancestors and draw(st.booleans()):
        node = draw(st.sampled_from(ancestors))
        return draw(st.sampled_from([f"{node}.result.{FIELD[kinds[node]]}", f"{node}.status"]))
    return draw(st.sampled_from(ITEM_TERMS))


def text(draw, ancestors: list[str], kinds: dict[str, str]) -> str:
    """A whole-value expression (keeps its type), or expressions inside text."""
    if draw(st.booleans()):
        return "{{" + term(draw, ancestors, kinds) + "}}"
    holes = draw(st.integers(1, 2))
    return "#{{$index}}: " + " / ".join("{{" + term(draw, ancestors, kinds) + "}}"
                                        for _ in range(holes))


def payload(draw, kind: str, ancestors: list[str], kinds: dict[str, str]) -> dict:
    if kind == "log":
        return {"message": text(draw, ancestors, kinds)}
    if kind == "format":
        template = draw(st.sampled_from(TEMPLATES))
        if draw(st.booleans()):  # run expressions are resolved before the node runs
            template += " " + text(draw, ancestors, kinds)
        return {"data": draw(st.sampled_from(DATA)), "template": template,
                **({"separator": "|"} if draw(st.booleans()) else {})}
    if kind == "if":
        comparisons = []
        for _ in range(draw(st.integers(1, 2))):
            operator = draw(st.sampled_from(sorted(RIGHT)))
            comparisons.append({"{{" + term(draw, ancestors, kinds) + "}}": {
                operator: draw(st.sampled_from(RIGHT[operator]))}})
        return {"condition": {draw(st.sampled_from(["$and", "$or"])): comparisons}}
    # A short wait, longest for some items: with concurrency, iterations end out of order.
    return {"delayMs": draw(st.sampled_from([0, 2, "{{$item.wait || 0}}", "{{$item.price}}"]))}


@st.composite
def bodies(draw) -> dict[str, dict]:
    """One to five body nodes, each after zero to two earlier ones (chains, diamonds)."""
    ids = BODY_IDS[:draw(st.integers(1, len(BODY_IDS)))]
    parents = {node: sorted(draw(st.sets(st.sampled_from(ids[:i]), max_size=2))) if i else []
               for i, node in enumerate(ids)}
    ancestors: dict[str, list[str]] = {}
    for node in ids:
        found = set(parents[node]).union(*(ancestors[p] for p in parents[node]))
        ancestors[node] = sorted(found)
    kinds = {node: draw(st.sampled_from(KINDS)) for node in ids}
    nodes = {}
    for node in ids:
        entry: dict[str, Any] = {"type": kinds[node],
                                 "payload": payload(draw, kinds[node], ancestors[node], kinds)}
        children = [child for child in ids if node in parents[child]]
        if children:
            entry["children"] = children
        if any(kinds[p] == "if" for p in parents[node]):
            entry["branch"] = draw(st.sampled_from(["then", "else"]))
        if draw(st.sampled_from(range(6))) == 1:
            entry["continueOnError"] = True
        if draw(st.sampled_from(range(3))) == 1:
            entry["retry"] = RETRY
        nodes[node] = entry
    return nodes


def entries(body: dict[str, dict]) -> list[str]:
    """The body nodes no other body node lists as a child: the loop's ``loopBody``."""
    listed = {child for node in body.values() for child in node.get("children", ())}
    return [node for node in body if node not in listed]


# -- requests ------------------------------------------------------------------------------

def loop_request(body: dict[str, dict], values: list, *, concurrency: int = 1,
                 on_error: str = "continue") -> dict:
    """A root, a loop over ``values`` holding ``body``, nothing after it."""
    loop = {"type": "for-each", "loopBody": entries(body), "payload": {
        "array": "{{root.result.items}}", "concurrency": concurrency, "onItemError": on_error}}
    nodes = {"root": {"type": "manual", "children": ["each"]}, "each": loop, **body}
    return {"definition": {"nodes": nodes}, "payload": {"items": values, "tag": "T"},
            "timeoutMs": TIMEOUT_MS}


def written_out(value: Any) -> Any:
    """``value`` with ``$item``/``$index`` read from the root's payload instead."""
    if isinstance(value, str):
        return value.replace("$item", "root.result.item").replace("$index", "root.result.index")
    if isinstance(value, list):
        return [written_out(v) for v in value]
    if isinstance(value, dict):
        return {written_out(k): written_out(v) for k, v in value.items()}
    return value


def by_hand(body: dict[str, dict], item: Any, index: int) -> dict:
    """The body as a workflow of its own, for one item."""
    nodes = {"root": {"type": "manual", "children": entries(body)}, **written_out(body)}
    return {"definition": {"nodes": nodes}, "payload": {"item": item, "index": index,
                                                         "tag": "T"}, "timeoutMs": TIMEOUT_MS}


def timeless(value: Any) -> Any:
    """``value`` without the moments in it (keys in ``TIMES``, ISO times inside text)."""
    if isinstance(value, str):
        return ISO_TIME.sub("<time>", value)
    if isinstance(value, list):
        return [timeless(v) for v in value]
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in TIMES}
    return value


def seen(state: dict) -> dict:
    """What an instance's entry says about its work (not where it sits, nor when)."""
    out = {key: state.get(key) for key in ("status", "input", "result", "reason", "attempts")}
    out["error"] = (state.get("error") or {}).get("code")
    return timeless(out)


def iteration(run: dict, body: dict[str, dict], index: int) -> dict:
    """What the loop's result should say of an iteration that ran as ``run`` did."""
    states = run["executionState"]
    failed = any(states[n]["status"] == "failure" and not body[n].get("continueOnError")
                 for n in body)
    return {"index": index, "status": "failure" if failed else "success",
            "results": {n: states[n]["result"] if states[n]["status"] == "success" else None
                        for n in body}}


# -- the properties ------------------------------------------------------------------------

@PROPERTIES
@given(body=bodies(), values=items, on_error=st.sampled_from(["continue", "stop"]))
def test_each_iteration_is_the_body_run_by_hand_for_its_item(body, values, on_error):
    request = loop_request(body, values, on_error=on_error)
    note(f"request: {request}")
    run = run_engine(request)
    loop, states = run["executionState"]["each"], run["executionState"]
    expected, first_failure = [], None
    for index, item in enumerate(values):
        if first_failure is not None and on_error == "stop":  # concurrency 1: none started
            expected.append({"index": index, "status": "skipped",
                             "results": dict.fromkeys(body)})
            assert not any(f"{node}[{index}]" in states for node in body)
            continue
        alone = run_engine(by_hand(body, item, index))
        expected.append(iteration(alone, body, index))
        for node in body:  # an input keeps its condition keys as written
            assert seen(written_out(states[f"{node}[{index}]"])) == \
                seen(alone["executionState"][node]), (node, index)
        if expected[-1]["status"] == "failure" and first_failure is None:
            first_failure = index
    stopped = on_error == "stop" and first_failure is not None
    event(f"{on_error}: " + ", ".join(sorted({i["status"] for i in expected})))
    assert timeless(loop["result"]) == timeless({
        "iterations": expected, "iterationCount": len(values),
        "lastAdvancedIteration": first_failure if stopped else len(values) - 1,
        "status": "stopped" if stopped else "completed"})
    assert loop["status"] == ("failure" if stopped else "success")
    if stopped:
        assert loop["error"]["code"] == "ITERATION_FAILED"
        assert loop["error"]["message"].startswith(f"Iteration {first_failure} failed: ")


def started(result: dict) -> dict[int, dict]:
    """The iterations that started, by index."""
    return {i["index"]: i for i in result["iterations"] if i["status"] != "skipped"}


@PROPERTIES
@given(body=bodies(), values=items, concurrency=st.integers(2, 10),
       on_error=st.sampled_from(["continue", "stop"]))
def test_concurrency_changes_when_iterations_run_not_what_they_produce(
        body, values, concurrency, on_error):
    one = run_engine(loop_request(body, values, on_error=on_error))
    many = run_engine(loop_request(body, values, concurrency=concurrency, on_error=on_error))
    note(f"one at a time: {one}")
    for run in (one, many):
        del run["executionState"]["each"]["input"]["concurrency"]  # the one difference
        if run["error"]:  # names first the instance that failed first, in time
            del run["error"]["message"]
    if on_error == "continue" or one["executionState"]["each"]["status"] == "success":
        assert timeless(many) == timeless(one)
        return
    # Stopping: iterations already running when one fails still finish, so more of them
    # may have started; every iteration that ran in both produced the same, and the
    # first failure named is the same.
    loops = [run["executionState"]["each"] for run in (one, many)]
    first, second = (started(loop["result"]) for loop in loops)
    assert set(first) <= set(second)
    assert timeless(first) == timeless({i: second[i] for i in first})
    assert loops[1]["error"]["message"].startswith(
        f"Iteration {max(first)} failed: ") and loops[0]["error"] == loops[1]["error"]
    for state_id, state in one["executionState"].items():
        if state_id != "each":  # its result lists the iterations that started
            assert seen(state) == seen(many["executionState"][state_id]), state_id


@PROPERTIES
@given(body=bodies(), values=items, concurrency=st.integers(1, 10),
       on_error=st.sampled_from(["continue", "stop"]))
def test_total_cu_is_the_attempts_started(body, values, concurrency, on_error):
    run = run_engine(loop_request(body, values, concurrency=concurrency, on_error=on_error))
    states = run["executionState"]
    event(f"most attempts of an instance: {max(s.get('attempts', 0) for s in states.values())}")
    assert run["totalCu"] == sum(state.get("attempts", 0) for state in states.values())
    ran = [s for n, s in states.items() if "[" in n and s["status"] != "skipped"]
    assert all(state["attempts"] >= 1 for state in ran)
    assert states["each"]["attempts"] == 1
