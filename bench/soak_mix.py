"""The soak test's request mix: what is sent, and what must come back (``bench.soak``).

Runs of several node types that succeed, fail (at run time, after retries, at a
blocked address, past the deadline) or go on after an error; requests refused
before any run exists; duplicate runIds and lookups of earlier runs.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from decimal import Decimal

from tests.helpers import definition as graph

BALANCES = {"rich-a": 10**9, "rich-b": 10**9, "rich-c": 10**9, "lean": 400, "tiny": 60}
PICK = (4, 4, 4, 2, 1)  # how often each token of BALANCES sends a run


@dataclass
class Call:
    """One request as sent and as answered."""

    kind: str
    token: str  # a name in BALANCES, "off" (disabled) or "unknown" (never issued)
    body: object = None  # a dict sent as JSON, or raw bytes
    expect: dict = field(default_factory=dict)
    path: str = "/v1/runs/sync"  # POSTed, or fetched when body is None
    ctype: str = "application/json"
    status: int | None = None  # None: no HTTP answer (the body says why)
    response: dict = field(default_factory=dict)
    retry_after: str | None = None
    sent: float = 0.0
    received: float = 0.0


LOG = {"type": "log", "payload": {"message": "after {{root.result.n}}"}}
SUM = "function transform(xs) { return xs.reduce((s, x) => s + x, 0); }"
THROW = {"code": "function transform(input) { throw new Error('no ' + typeof input); }"}


def ok_data(rng: random.Random) -> tuple[dict, dict]:
    """if/else with log, filter → pluck, list-min and regex over random rows."""
    rows = [{"amount": str(rng.randint(1, 500)), "to": f"0x{k}"} for k in range(rng.randint(1, 5))]
    n, low = rng.randint(0, 999), min(range(len(rows)), key=lambda k: int(rows[k]["amount"]))
    payload = {"n": n, "rows": rows, "memo": "paid ETH 1.5 and USDC 20"}
    body = {"payload": payload, "definition": graph(
        "root>check", "check>big", "check>small", "root>keep", "keep>who", "root>low", "root>re",
        check={"type": "if", "payload": {"condition": {"$and": [
            {"{{root.result.n}}": {"$gte": 500}}]}}},
        big={**LOG, "branch": "then"}, small={**LOG, "branch": "else"},
        keep={"type": "filter", "payload": {"array": "{{root.result.rows}}",
                                            "filter": {"$and": [{"amount": {"$gt": 100}}]}}},
        who={"type": "pluck", "payload": {"array": "{{keep.result.filtered}}", "field": "to"}},
        low={"type": "list-min", "payload": {"array": "{{root.result.rows}}", "field": "amount"}},
        re={"type": "regex", "payload": {"text": "{{root.result.memo}}", "pattern": "[A-Z]{3,4}",
                                         "global": True}})}
    return body, {"run": "success", "cu": 6, "results": {
        "big" if n >= 500 else "small": {"message": f"after {n}"},
        "who": {"values": [r["to"] for r in rows if int(r["amount"]) > 100]},
        "low": {"min": rows[low]["amount"], "index": low, "item": rows[low]},
        "re": {"matches": [{"0": "ETH"}, {"0": "USDC"}]}}}


def ok_join(rng: random.Random) -> tuple[dict, dict]:
    """Wei there and back, code-transform and a short delay, joined by a format node."""
    value, xs = f"{rng.randint(0, 999)}.{rng.randint(0, 10**6 - 1):06d}", [1, rng.randint(0, 9)]
    ms = rng.randint(0, 20)
    body = {"payload": {"value": value, "xs": xs}, "definition": graph(
        "root>to", "to>back", "root>calc", "root>wait", "back>join", "calc>join", "wait>join",
        to={"type": "convert-to-wei", "payload": {"value": "{{root.result.value}}", "decimals": 6}},
        back={"type": "convert-from-wei", "payload": {"wei": "{{to.result.wei}}", "decimals": 6}},
        calc={"type": "code-transform", "payload": {"input": "{{root.result.xs}}", "code": SUM}},
        wait={"type": "delay", "payload": {"delayMs": ms}},
        join={"type": "format", "payload": {"template": "{{@v}} {{@s}} {{@ms}}", "data": {
            "v": "{{back.result.value}}", "s": "{{calc.result.output}}",
            "ms": "{{wait.result.delayedMs}}"}}})}
    text = f"{Decimal(value).normalize():f} {sum(xs)} {ms}"
    return body, {"run": "success", "cu": 5, "results": {"join": {"formatted": text}}}


def fixed(expect: dict, *edges: str, timeout_ms: int | None = None, **nodes: dict):
    """A builder of the same run every time."""
    body = {"payload": {"n": 1}, "definition": graph(*edges, **nodes)}
    return lambda rng: ({**body, **({"timeoutMs": timeout_ms} if timeout_ms else {})}, expect)


FAILED = {"run": "failure", "error": "NODE_FAILED"}
RUNS = {  # kind → (weight, builder)
    "ok-data": (24, ok_data), "ok-join": (12, ok_join),
    "fail-wei": (4, fixed(  # too many decimals: the child is skipped, the sibling runs
        {**FAILED, "cu": 2, "nodes": {"to": "INVALID_INPUT", "after": "upstream_failed"}},
        "root>to", "to>after", "root>side", after=LOG, side=LOG,
        to={"type": "convert-to-wei", "payload": {"value": "1.2345", "decimals": 2}})),
    "fail-retry": (4, fixed(  # three attempts, three CU
        {**FAILED, "cu": 3, "nodes": {"bad": "CODE_ERROR"}}, "root>bad",
        bad={"type": "code-transform", "payload": THROW,
             "retry": {"maxAttempts": 3, "initialDelayMs": 5, "retryOn": ["CODE_ERROR"]}})),
    "fail-blocked": (4, fixed(  # refused before connecting, and never retried
        {**FAILED, "cu": 1, "nodes": {"get": "BLOCKED_DESTINATION"}}, "root>get",
        get={"type": "http-request", "payload": {"url": "http://10.0.0.1/"},
             "retry": {"maxAttempts": 3, "initialDelayMs": 5}})),
    "continue": (4, fixed(  # continueOnError: the child runs and reads the error
        {"run": "success", "cu": 2, "results": {"after": {"message": "CODE_ERROR"}}},
        "root>bad", "bad>after", bad={"type": "code-transform", "payload": THROW,
                                      "continueOnError": True},
        after={"type": "log", "payload": {"message": "{{$nodes.bad.error.code}}"}})),
    "deadline": (3, fixed(  # answered within 100 ms of the run's deadline
        {"run": "failure", "error": "RUN_TIMEOUT", "cu": 1, "maxMs": 150,
         "nodes": {"wait": "TIMEOUT", "after": "run_timeout"}}, "root>wait", "wait>after",
        timeout_ms=50, wait={"type": "delay", "payload": {"delayMs": 5000}}, after=LOG)),
}
REFUSED = {  # kind → (HTTP status, code, change to a valid body, other Call fields)
    "bad-def": (400, 400228, {"definition": graph("root>ghost")}, {}),
    "bad-root": (400, 400229, {"definition": {"nodes": {"root": LOG}}}, {}),
    "bad-runid": (400, 400078, {"runId": "run-1!"}, {}),
    "bad-json": (400, 400000, {}, {"body": b'{"definition": {'}),
    "bad-ctype": (415, 415000, {}, {"ctype": "text/plain"}),
    "bad-token": (401, 401000, {}, {"token": "unknown"}),
    "disabled": (403, 403000, {}, {"token": "off"}),
}
WEIGHTS = {**{k: w for k, (w, _) in RUNS.items()}, **dict.fromkeys(REFUSED, 1),
           "dup": 3, "get": 8, "get-other": 2}


def worst_case(body: dict) -> int:
    """Every non-root node at its maximum attempts (SPEC §8), worked out on our side."""
    return sum(node["retry"].get("maxAttempts", 3) if "retry" in node else 1
               for key, node in body["definition"]["nodes"].items() if key != "root")


def next_call(rng: random.Random, runs: list[Call]) -> Call:
    """A random request of the mix; GETs and duplicate runIds refer to an earlier run."""
    kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
    if kind in REFUSED:
        status, code, change, fields = REFUSED[kind]
        return Call(**{"kind": kind, "token": "rich-a", "body": {**ok_data(rng)[0], **change},
                       "expect": {"http": status, "code": code}, **fields})
    if kind not in RUNS and runs:
        run = rng.choice(runs)
        run_id, other = run.response["runId"], "rich-b" if run.token != "rich-b" else "rich-c"
        if kind == "dup":
            return Call(kind, run.token, {**run.body, "runId": run_id},
                        {"http": 400, "code": 400079})
        path = f"/v1/runs/{run_id}"
        if kind == "get":
            return Call(kind, run.token, None, {"http": 200, "same": run.response}, path)
        return Call(kind, other, None, {"http": 404, "code": 404000}, path)
    kind = kind if kind in RUNS else "ok-data"
    body, expect = RUNS[kind][1](rng)
    if rng.random() < 0.3:
        body["runId"] = f"run_soak_{rng.randrange(10**12)}"
    return Call(kind, rng.choices(list(BALANCES), PICK)[0], body, {"http": 200, **expect})


def mismatch(call: Call) -> str | None:
    """Why an answer differs from its expectation, or None."""
    want, got = call.expect, call.response
    if call.status != want["http"] or got.get("code") != want.get("code") or "notJson" in got \
            or ("same" in want and got != want["same"]):
        return f"{call.status} {json.dumps(got)[:300]}"
    if "run" not in want:
        return None
    nodes = got["executionState"]
    if (got["status"], (got["error"] or {}).get("code")) != (want["run"], want.get("error")):
        return f"run {got['status']} {got['error']}"
    if not got["totalCu"] == want["cu"] == sum(n.get("attempts", 0) for n in nodes.values()):
        return f"totalCu {got['totalCu']} ≠ {want['cu']} or the attempts made"
    for node, code in want.get("nodes", {}).items():
        if code not in (nodes[node].get("error", {}).get("code"), nodes[node].get("reason")):
            return f"{node}: {nodes[node]} is not {code}"
    for node, result in want.get("results", {}).items():
        if any(nodes[node].get("result", {}).get(k) != v for k, v in result.items()):
            return f"{node}: {nodes[node].get('result')} ≠ {result}"
    if got["durationMs"] > want.get("maxMs", got["durationMs"]):
        return f"{got['durationMs']} ms, more than {want['maxMs']}"
    return None
