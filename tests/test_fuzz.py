"""Fuzzing the run and validate endpoints with hypothesis (SPEC §1, §2, §5, §6).

Whatever arrives, the answer is 200 or a 4xx documented for the route, in the
one error envelope: never a 5xx, never invalid JSON, never a hang. A 200 run
lists every node of the definition in a final state; validate accepts exactly
the bodies the run endpoint does not refuse with 400 (they share their checks).
Strategies are in ``tests/fuzz_strategies.py``; no example can reach a network,
and a guard here fails the test if one tries. What the fuzzer found is kept at
the end, in its smallest form, as plain examples.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from app.openapi import document
from tests.fuzz_strategies import RawRequest, raw_requests, run_bodies
from tests.helpers import DEV_AUTH

RUN, VALIDATE = "/v1/runs/sync", "/v1/workflows/validate"
FIELDS = {RUN: {"definition", "payload", "propValues", "runId", "timeoutMs"},
          VALIDATE: {"definition", "payload", "propValues", "runId", "timeoutMs", "name"}}
BODY_CODES = {400000, 400228, 400229, 400230, 400078, 400079}
TOP_LEVEL_CODES = {"payload": 400230, "propValues": 400230, "runId": 400078}
NODE_STATUSES = {"success", "failure", "skipped"}  # a finished run leaves nothing pending
NODE_ERRORS = {"INVALID_INPUT", "TIMEOUT", "NETWORK_ERROR", "HTTP_ERROR", "BLOCKED_DESTINATION",
               "RESPONSE_TOO_LARGE", "CODE_ERROR", "DELIVERY_FAILED", "INTERNAL"}
SKIP_REASONS = {"branch_not_taken", "upstream_failed", "run_timeout"}
RUN_ID = re.compile(r"^run_[A-Za-z0-9_]{1,64}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_DEPTH = 64
# SPEC §3 allows 100 ms past the run deadline; these bounds catch a hang without
# failing on a busy 2-core machine (wall time also covers validation and the store).
LATE_MS = 1000  # durationMs past timeoutMs
SLACK_S = 2.0  # seconds of wall time past timeoutMs

# No shrinking: one attempt costs up to a run, and shrinking a failure took over five
# minutes. Failures print the request (``note``); add Phase.shrink to investigate one.
FUZZ = settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.fixture
def offline(app, monkeypatch):
    """No allow-list, no name lookups, no connections: attempts are recorded and fail."""
    app.config["OUTBOUND_ALLOW"] = []
    attempts: list = []
    lookup = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "no name lookups in fuzz tests") from None
        return lookup(host, *args, **kwargs)

    def connect(sock, address):
        attempts.append(address)
        raise ConnectionRefusedError("no connections in fuzz tests")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    yield attempts
    assert attempts == []


@pytest.fixture
def used_run_ids() -> set[str]:
    """Run ids the app has stored so far (the store lives as long as the test)."""
    return set()


def documented(route: str) -> set[int]:
    """The statuses /openapi.json lists for ``POST route``, 5xx left out."""
    responses = document()["paths"][route]["post"]["responses"]
    return {int(status) for status in responses if int(status) < 500}


def _reject(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes):
    """RFC 8259 JSON (a BOM tolerated): no NaN, no Infinity."""
    return json.loads(data.decode("utf-8-sig"), parse_constant=_reject)


def too_deep(value, limit: int = MAX_DEPTH) -> bool:
    """True when containers nest deeper than ``limit`` (the body is level 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def post(client, route: str, data: bytes, content_type: str | None = "application/json",
         request_id: str | None = None):
    """POST with the test token; the response and the seconds it took."""
    headers = {**DEV_AUTH, **({"X-Request-ID": request_id} if request_id is not None else {})}
    started = time.monotonic()
    response = client.post(route, data=data, content_type=content_type, headers=headers)
    return response, time.monotonic() - started


def answer(response, route: str) -> dict:
    """The checked JSON body of any answer: a documented status and its envelope."""
    assert response.status_code in {200} | documented(route), response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = strict_json(response.get_data())
    assert isinstance(body, dict)
    if response.status_code != 200:
        check_error(response, body)
    return body


def check_error(response, body: dict) -> None:
    """SPEC §6's envelope: code, message, requestId, and errors as path → messages."""
    code, status = body.get("code"), response.status_code
    assert isinstance(code, int) and code // 1000 == status
    assert isinstance(body.get("message"), str) and body["message"]
    assert isinstance(body.get("requestId"), str)
    assert body["requestId"] == response.headers["X-Request-ID"]
    errors = body.get("errors", {})
    assert isinstance(errors, dict)
    for path, messages in errors.items():
        assert isinstance(path, str) and isinstance(messages, list) and messages
        assert all(isinstance(m, str) for m in messages)
    if status == 400:
        assert code in BODY_CODES
        check_code(code, errors)
    if status == 402:
        assert isinstance(body["balance"], int) and isinstance(body["required"], int)


def check_code(code: int, errors: dict) -> None:
    """``code`` is the first of SPEC §2's order among the codes of the problems listed.

    A path alone may not tell a problem's code: an unknown top-level key named
    ``payload.x`` (400228) sits where a missing input ``x`` (400230) would.
    """
    if code in (400000, 400079):
        assert code == 400000 or set(errors) == {"runId"}
        return
    order = [400229, 400228, 400230, 400078]
    possible = {path: {400228, 400229 if path == "definition.nodes.root.type" else
                       TOP_LEVEL_CODES.get(re.split(r"[.\[]", path, maxsplit=1)[0], 400228)}
                for path in errors}
    assert any(code in codes for codes in possible.values()), errors
    assert all(max(map(order.index, codes)) >= order.index(code)
               for codes in possible.values()), errors


def check_run(run: dict, request: dict, levels: list[list[str]]) -> None:
    """A 200 run: every node, in response order, in a final state; the totals add up."""
    nodes = request["definition"]["nodes"]
    assert RUN_ID.match(run["runId"]) and run["runId"] == request.get("runId", run["runId"])
    assert run["status"] in ("success", "failure")
    assert (run["status"] == "success") == (run["error"] is None)
    states = run["executionState"]
    assert list(states) == [node for level in levels for node in level]
    assert set(states) == set(nodes)
    level_of = {node: i for i, level in enumerate(levels) for node in level}
    for node_id, state in states.items():
        check_node(state, nodes[node_id], level_of[node_id])
    assert states["root"]["status"] == "success" and "triggeredAt" in states["root"]["result"]
    spent = sum(s.get("attempts", 0) for n, s in states.items() if n != "root")
    assert isinstance(run["totalCu"], int) and run["totalCu"] == spent >= 0
    hard = [n for n, s in states.items()
            if s["status"] == "failure" and not nodes[n].get("continueOnError")]
    if run["error"] is None:
        assert not hard and all(s.get("reason") != "run_timeout" for s in states.values())
    else:
        assert run["error"]["code"] in ("NODE_FAILED", "RUN_TIMEOUT"), run["error"]
        assert run["error"]["code"] == "RUN_TIMEOUT" or hard
    deadline = request.get("timeoutMs", 60_000)
    assert isinstance(run["durationMs"], int) and 0 <= run["durationMs"] <= deadline + LATE_MS
    if not request["definition"].get("sensitivePropKeys"):  # redaction may rewrite a branch
        check_schedule(states, nodes, run["error"])


def check_schedule(states: dict, nodes: dict, run_error: dict | None) -> None:
    """SPEC §3: a node ran exactly when an incoming edge was active and no parent failed."""
    for node_id, state in states.items():
        parents = [p for p in nodes if node_id in nodes[p].get("children", [])]
        if node_id == "root" or state.get("reason") == "run_timeout":
            assert node_id == "root" or run_error["code"] == "RUN_TIMEOUT"
            continue
        failed = any(states[p].get("reason") == "upstream_failed" or (
            states[p]["status"] == "failure" and not nodes[p].get("continueOnError"))
            for p in parents)
        active = any(states[p]["status"] in ("success", "failure") and (
            nodes[p]["type"] != "if" or states[p].get("result", {}).get("branch")
            == nodes[node_id].get("branch")) for p in parents)
        ran = state["status"] != "skipped"
        assert ran == (active and not failed), (node_id, state)
        assert state.get("reason") == (None if ran else
                                       "upstream_failed" if failed else "branch_not_taken")
        assert (state.get("attempts", 0) >= 1) == ran, state


def check_node(state: dict, node: dict, level: int) -> None:
    """One entry of ``executionState``: its status and the fields that go with it."""
    assert state["type"] == node["type"] and state["level"] == level
    assert state["status"] in NODE_STATUSES, state
    if state["status"] == "failure":
        error = state["error"]
        assert error["code"] in NODE_ERRORS and isinstance(error["message"], str)
        assert isinstance(error["retryable"], bool)
    elif state["status"] == "skipped":
        assert state["reason"] in SKIP_REASONS
    else:
        assert "result" in state
    most = node.get("retry", {}).get("maxAttempts", 3) if "retry" in node else 1
    assert 0 <= state.get("attempts", 0) <= most


def check_validation(result: dict, request: dict) -> None:
    """A 200 from validate: every node counted and placed on one level."""
    nodes = request["definition"]["nodes"]
    assert result["valid"] is True and result["nodeCount"] == len(nodes)
    assert result["levels"][0] == ["root"]
    assert sorted(n for level in result["levels"] for n in level) == sorted(nodes)


def check_same_verdict(run, run_body: dict, check, check_body: dict, run_id, used: set) -> None:
    """Validate says 200 exactly when the run endpoint did not answer 400 (or 400079)."""
    duplicate = run.status_code == 400 and run_body["code"] == 400079
    if duplicate:
        assert check.status_code == 200 and run_id in used
    else:
        assert (run.status_code == 400) == (check.status_code == 400), (run_body, check_body)
    if check.status_code == 200 and run_id in used:
        assert duplicate, run_body
    if run.status_code == 400 and not duplicate:
        assert run_body["code"] == check_body["code"]
        assert run_body.get("errors") == check_body.get("errors")


@settings(FUZZ, max_examples=200)
@given(body=run_bodies())
def test_valid_ish_definitions_run_or_are_refused_alike(client, offline, used_run_ids, body):
    data = json.dumps(body).encode()
    note(f"body: {data.decode()}")
    run, elapsed = post(client, RUN, data)
    check, _ = post(client, VALIDATE, data)
    run_body, check_body = answer(run, RUN), answer(check, VALIDATE)
    event(f"run: {run.status_code} {run_body.get('code') or run_body.get('status')}")
    check_same_verdict(run, run_body, check, check_body, body.get("runId"), used_run_ids)
    if check.status_code == 200:
        check_validation(check_body, body)
    if run.status_code == 200:
        used_run_ids.add(run_body["runId"])
        check_run(run_body, body, check_body["levels"])
        for state in run_body["executionState"].values():
            event(f"node: {state['status']} {state.get('error', {}).get('code', '')}")
        assert elapsed <= body["timeoutMs"] / 1000 + SLACK_S
    assert offline == []


def holds_infinity(value) -> bool:
    """True when a number in ``value`` overflowed a double (``1e400`` parses as inf)."""
    if isinstance(value, float):
        return math.isinf(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(
        value, list) else ()
    return any(holds_infinity(item) for item in items)


def admission(request: RawRequest) -> tuple[int, int] | None:
    """The answer SPEC §6 fixes before any body check; None once the body is an object."""
    mimetype = (request.content_type or "").split(";")[0].strip().lower()
    if mimetype != "application/json" and not (
            mimetype.startswith("application/") and mimetype.endswith("+json")):
        return 415, 415000
    try:
        value = strict_json(request.data)
    except (ValueError, RecursionError):
        return 400, 400000
    if not isinstance(value, dict) or too_deep(value):
        return 400, 400000
    return None


def check_raw(client, request: RawRequest, route: str) -> str:
    """Any request: the answer SPEC §6 fixes for it, or a documented one in its envelope."""
    response, elapsed = post(client, route, request.data, request.content_type,
                             request.request_id)
    body = answer(response, route)
    outcome = f"{route}: {response.status_code} {body.get('code', '')}"
    echoed = response.headers["X-Request-ID"]  # SPEC §1: a well-formed one is kept
    assert REQUEST_ID.fullmatch(echoed)
    assert (echoed == request.request_id) == bool(REQUEST_ID.fullmatch(request.request_id or ""))
    expected = admission(request)
    if expected is not None:
        assert (response.status_code, body["code"]) == expected, body
        return outcome
    value = strict_json(request.data)
    if body.get("code") == 400000:  # refusing a number that no double holds is fair
        assert holds_infinity(value), body
        return outcome
    unknown = set(value) - FIELDS[route]
    if unknown:  # SPEC §1: 400228, located at the key (400229 may still come first)
        assert response.status_code == 400 and body["code"] in (400229, 400228), body
        # A location longer than the validation's cut is shown cut, ending in "…".
        located = {k[:-1] if k.endswith("…") else k for k in body["errors"]}
        assert all(any(key.startswith(where) for where in located) for key in unknown), \
            body["errors"]
    if response.status_code == 200 and route == RUN:
        check, _ = post(client, VALIDATE, request.data)
        check_run(body, value, answer(check, VALIDATE)["levels"])
        assert elapsed <= value.get("timeoutMs", 60_000) / 1000 + SLACK_S
    elif response.status_code == 200:
        check_validation(body, value)
    return outcome


@settings(FUZZ, max_examples=300)
@given(request=raw_requests(), route=st.sampled_from([RUN, VALIDATE]))
def test_any_request_gets_a_documented_answer(client, offline, request, route):
    note(f"{route} {request!r}")
    event(check_raw(client, request, route))
    assert offline == []


ROOT = {"nodes": {"root": {"type": "manual"}}}
FAILING_DELAY = {"nodes": {"root": {"type": "manual", "children": ["d"]},
                           "d": {"type": "delay", "payload": {"delayMs": "{{$props.key}}"}}}}
FINDINGS = [  # found by the fuzzer (fixed in 44ccca9 and a417135), smallest form
    pytest.param(RUN, {"definition": {**ROOT, "inputSchema": [{"key": "a", "type": "date"}]},
                       "payload": {"a": 1}}, id="inputSchema-type-not-known-500"),
    pytest.param(VALIDATE, {"definition": {**ROOT, "inputSchema": [{"type": "number"}]}},
                 id="inputSchema-item-without-key-500"),
    pytest.param(VALIDATE, {"definition": {**ROOT, "inputSchema": "x"}},
                 id="inputSchema-not-a-list-500"),
    pytest.param(VALIDATE, {"definition": {
        **ROOT, "inputSchema": [{"key": "a", "type": "number", "required": "yes"}]}},
                 id="inputSchema-required-not-boolean-500"),
    pytest.param(RUN, b'{"definition": {"nodes": {"root": {"type": "manual"}}}, '
                      b'"payload": {"n": 1e400}}', id="number-beyond-double-gives-Infinity"),
    pytest.param(VALIDATE, {"definition": ROOT, "payload.x": 1}, id="unknown-key-payload.x"),
    pytest.param(VALIDATE, {"definition": ROOT, "runId[0]": 1}, id="unknown-key-runId[0]"),
    pytest.param(VALIDATE, {"definition": ROOT, "_schema": 1}, id="unknown-key-_schema"),
    pytest.param(RUN, {"definition": {**FAILING_DELAY, "props": {"key": "_"},
                                      "sensitivePropKeys": ["key"]}, "timeoutMs": 1000},
                 id="secret-prop-redacted-inside-error-codes"),
]


@pytest.mark.parametrize("route, body", FINDINGS)
def test_findings_of_the_fuzzer(client, offline, route, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    check_raw(client, RawRequest(data, "application/json"), route)
