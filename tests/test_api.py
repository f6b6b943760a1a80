"""The HTTP surface: envelope, check order, auth, CU, stored runs (SPEC §1, §6–§8)."""
from __future__ import annotations

import gzip
import io
import json
import time
import uuid
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app.errors import ApiError
from app.jsonbody import parse_json
from app.jsonread import TooDeep, loads_strict
from tests.helpers import DEV_AUTH, definition, post_run

TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
    "payload": {"message": "hello"}}
BIG = 1024 * 1024


def raw_post(client, data, content_type="application/json", headers=DEV_AUTH,
             path="/v1/runs/sync"):
    return client.post(path, data=data, content_type=content_type, headers=headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert body["code"] == code and body["message"] and body["requestId"]
    assert response.headers["X-Request-ID"] == body["requestId"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_a_run_answers_with_the_full_state(client):
    response = post_run(client, TWO_NODES)
    assert response.status_code == 200
    body = response.json
    assert list(body) == ["runId", "status", "durationMs", "totalCu", "error", "executionState"]
    assert body["status"] == "success" and body["error"] is None and body["totalCu"] == 1
    assert list(body["executionState"]) == ["root", "greet"]
    assert body["executionState"]["greet"]["input"] == {"message": "Incoming: hello"}


def test_generated_run_ids_are_time_sortable_and_unique(client):
    ids = [post_run(client, TWO_NODES).json["runId"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(i.startswith("run_") and len(i) == 30 for i in ids)
    assert [i[:14] for i in ids] == sorted(i[:14] for i in ids)  # the millisecond prefix
    before = int(time.time() * 1000)
    run_id = post_run(client, TWO_NODES).json["runId"]
    value = 0
    for digit in run_id[4:]:  # a ULID: Crockford's base 32, 5 bits a digit
        value = value * 32 + "0123456789abcdefghjkmnpqrstvwxyz".index(digit)
    assert value < 2 ** 128 and before <= value >> 80 <= time.time() * 1000


def test_a_run_id_is_its_millisecond_then_its_random_bits_digit_by_digit(monkeypatch):
    from app import runs
    for ms, random in ((1_700_000_000_123, bytes(range(1, 17))), (2 ** 48 - 1, b"\xff" * 16),
                       (0, bytes(16)), (1, bytes(range(240, 256)))):
        monkeypatch.setattr(runs.time, "time", lambda ms=ms: (ms + 0.5) / 1000)
        monkeypatch.setattr(runs.os, "urandom", lambda n, random=random: random[:n])
        run_id = runs.new_run_id()
        assert run_id.startswith("run_") and len(run_id) == 30
        value = 0
        for digit in run_id[4:]:
            value = value * 32 + "0123456789abcdefghjkmnpqrstvwxyz".index(digit)
        bits = 0  # 80 random bits: each random byte's low five
        for byte in random:
            bits = bits << 5 | byte & 31
        assert value == ms << 80 | bits


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing", headers=DEV_AUTH), 404, 404000)
    assert_error(client.get("/nothing"), 404, 404000)
    response = client.delete("/v1/runs/sync", headers=DEV_AUTH)
    assert_error(response, 405, 405000)
    assert "POST" in response.headers["Allow"]


def test_get_runs_sync_is_a_lookup_of_a_run_named_sync(client):
    assert_error(client.get("/v1/runs/sync", headers=DEV_AUTH), 404, 404000)


def test_size_is_checked_before_the_token(client):
    assert_error(raw_post(client, b" " * (BIG + 1), headers={}), 413, 413000)
    assert_error(raw_post(client, b"{}" + b" " * (BIG - 2)), 400, 400228)  # exactly the limit


def test_oversized_body_without_content_length(app):
    # What gunicorn hands over for Transfer-Encoding: chunked: no CONTENT_LENGTH, and a
    # stream it terminates itself.
    environ = EnvironBuilder(path="/v1/runs/sync", method="POST", headers=DEV_AUTH,
                             content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(b" " * (BIG + 10)), "wsgi.input_terminated": True})
    body, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413")
    assert json.loads(b"".join(body))["code"] == 413000


def test_body_limit_is_configurable(app):
    app.config["MAX_BODY_BYTES"] = 100
    assert_error(raw_post(app.test_client(), json.dumps(TWO_NODES)), 413, 413000)


def test_token_is_required(client, app):
    response = raw_post(client, json.dumps(TWO_NODES), headers={})
    assert_error(response, 401, 401000)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = raw_post(client, json.dumps(TWO_NODES), headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, 401000)
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    app.extensions["store"].create_token("off", 10, secret="off-token")
    app.extensions["store"].set_enabled("off", False)
    assert_error(raw_post(client, json.dumps(TWO_NODES),
                          headers={"Authorization": "Bearer off-token"}), 403, 403000)


def test_token_is_checked_before_content_type(client):
    assert_error(raw_post(client, "x", content_type="text/plain", headers={}), 401, 401000)
    assert_error(raw_post(client, json.dumps(TWO_NODES), content_type="text/plain"), 415, 415000)
    assert raw_post(client, json.dumps(TWO_NODES),
                    content_type="application/json; charset=utf-8").status_code == 200


@pytest.mark.parametrize("data", [b"{", b"[]", b"3", b'"x"', b'{"a": NaN}', b"\xff\xfe{",
                                  b'{"a": 1e400}', b'{"a": -1e999}', b'{"a": ' + b"9" * 5000 + b"}",
                                  b"[" * 5000 + b"]" * 5000, b""])
def test_bodies_that_are_not_a_json_object(client, data):
    assert_error(raw_post(client, data), 400, 400000)


def json_way(raw: bytes, max_depth: int = 64):
    """A body as json reads it (``loads_strict``), or the 400's message: what
    ``parse_json`` must give, whichever reader it takes."""
    try:
        value = loads_strict((raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw).decode(),
                             max_depth)
    except TooDeep:
        return f"JSON is nested deeper than {max_depth} levels"
    except (UnicodeDecodeError, ValueError) as error:
        return f"Body is not valid JSON: {error}"
    return json.dumps(value)  # (an int and a float of one value write differently)


def parse_json_way(raw: bytes, max_depth: int = 64):
    try:
        return json.dumps(parse_json(raw, max_depth))
    except ApiError as error:
        return error.message


BODIES = [b'{"n": 18446744073709551615}', b'{"n": 18446744073709551616}',
          b'{"n": -9223372036854775809}', b'{"n": 1234567890123456789012}',
          b'{"n": 0.1, "m": 1e5, "o": 1E-400, "p": 2.2250738585072011e-308}',
          b'{"n": -0, "m": -0.0, "s": "v2.0 1e5 12345678901234567890"}',
          b'{"s": "\\ud800", "t": "\\ud83d\\ude00", "a": 1, "a": 2}',
          b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}", b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}",
          b'{"a": ' + b"[{}," * 70 + b"1" + b"]" * 70 + b"}", b"[" * 1100 + b"]" * 1100,
          b"\xef\xbb\xbf{}", b"\xef\xbb\xbf\xef\xbb\xbf{}", b'{"a": NaN}', b"", b" ",
          b'{"a": 1,}', b'{"a": "\x01"}', b'{"a": 01}', b"\xff{}", b'{"a": 1} x',
          b'{"\xc3\xa9": "\xe2\x80\xa8"}', b'{"a": [true, false, null]}']


@pytest.mark.parametrize("raw", BODIES)
def test_a_body_is_read_as_json_reads_it(raw):
    # parse_json reads most bodies with orjson, the others with json: the same either way.
    assert parse_json_way(raw) == json_way(raw)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-10**25, 10**25)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3)),
       st.integers(0, 40), st.sampled_from(["", "x", ",", "]", "}", "\\", "9" * 20, "\ud800"]))
def test_any_body_is_read_as_json_reads_it(value, at, mangled):
    raw = json.dumps({"v": value}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert parse_json_way(raw, 3) == json_way(raw, 3)
    broken = raw[:at] + mangled.encode("utf-8", "surrogatepass") + raw[at:]
    assert parse_json_way(broken, 3) == json_way(broken, 3)


def test_a_body_may_begin_with_one_byte_order_mark_only(client):
    bom = "\ufeff".encode()
    assert raw_post(client, bom + json.dumps(TWO_NODES).encode()).status_code == 200
    body = assert_error(raw_post(client, bom + bom + b"{}"), 400, 400000)
    assert body["message"] == ("Body is not valid JSON: Unexpected UTF-8 BOM (decode using "
                               "utf-8-sig): line 1 column 1 (char 0)")
    body = assert_error(raw_post(client, b'{"a": NaN}'), 400, 400000)
    assert body["message"] == "Body is not valid JSON: NaN is not valid JSON"


def test_depth_limit_counts_the_body_as_level_one(client):
    def nested(levels):  # {"a": {"a": … {} …}} with `levels` objects
        return "{" + '"a":{' * (levels - 1) + "}" * levels

    assert_error(raw_post(client, nested(65)), 400, 400000)
    body = assert_error(raw_post(client, nested(64)), 400, 400228)  # deep enough, but invalid
    assert "a" in body["errors"]


def test_validation_errors_use_the_envelope(client):
    body = assert_error(post_run(client, {"definition": {"nodes": {"root": {"type": "log"}}},
                                          "runId": "bad"}), 400, 400229)
    assert body["message"] == "Root node must be of type 'manual'"
    assert set(body["errors"]) == {"definition.nodes.root.type", "runId"}


def test_request_id_is_accepted_or_generated(client):
    response = post_run(client, TWO_NODES, **{"X-Request-ID": "abc.DEF_1-2"})
    assert response.headers["X-Request-ID"] == "abc.DEF_1-2"
    response = post_run(client, {}, **{"X-Request-ID": "bad id!"})
    assert response.headers["X-Request-ID"] not in ("", "bad id!")
    assert response.json["requestId"] == response.headers["X-Request-ID"]
    generated = {post_run(client, {}).headers["X-Request-ID"] for _ in range(20)}
    assert len(generated) == 20
    for request_id in generated:  # a random UUID's 32 hex digits, as uuid4().hex writes it
        assert uuid.UUID(hex=request_id).hex == request_id
        assert uuid.UUID(request_id).version == 4
        assert uuid.UUID(request_id).variant == uuid.RFC_4122


def test_large_json_answers_are_gzipped_only_for_clients_that_accept_it(client):
    big = {**TWO_NODES, "payload": {"items": [{"sku": f"item-{n}", "qty": n}
                                              for n in range(200)]}}
    for accept, gzipped in ((None, False), ("", False), ("identity", False),
                            ("gzip;q=0", False), ("gzip", True), ("br, gzip;q=0.5", True),
                            ("*", True)):
        headers = {} if accept is None else {"Accept-Encoding": accept}
        response = post_run(client, big, **headers)
        assert response.status_code == 200
        assert response.headers["Vary"] == "Accept-Encoding"
        assert (response.headers.get("Content-Encoding") == "gzip") is gzipped, accept
        data = gzip.decompress(response.data) if gzipped else response.data
        assert json.loads(data)["status"] == "success"
    small = post_run(client, TWO_NODES, **{"Accept-Encoding": "gzip"})
    assert "Vary" not in small.headers and "Content-Encoding" not in small.headers


def test_unexpected_errors_are_500000_without_traceback(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("internal detail")

    response = app.test_client().get("/boom")
    body = assert_error(response, 500, 500000)
    assert "internal detail" not in json.dumps(body)


# -- compute units and stored runs -----------------------------------------------------

def balance(app, name="dev"):
    return next(t.balance for t in app.extensions["store"].tokens() if t.name == name)


def test_balance_is_charged_exactly_total_cu(app, client):
    before = balance(app)
    body = {"definition": definition("root>a", "a>b", a={"type": "log", "payload": {
        "message": "x"}, "retry": {"maxAttempts": 5}}, b={"type": "log", "payload": {
            "message": "y"}})}
    assert post_run(client, body).json["totalCu"] == 2
    assert balance(app) == before - 2  # the reservation of 6 was released


def test_balance_below_worst_case_is_402_after_body_checks(app, client):
    store = app.extensions["store"]
    store.create_token("poor", 3, secret="poor-token")
    poor = {"Authorization": "Bearer poor-token"}
    body = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"},
                                                  "retry": {"maxAttempts": 4}})}
    response = client.post("/v1/runs/sync", json=body, headers=poor)
    assert assert_error(response, 402, 402000)["balance"] == 3
    assert response.json["required"] == 4
    invalid = client.post("/v1/runs/sync", json={"definition": {}}, headers=poor)
    assert_error(invalid, 400, 400228)
    body["definition"]["nodes"]["a"]["retry"]["maxAttempts"] = 3
    assert client.post("/v1/runs/sync", json=body, headers=poor).status_code == 200
    assert balance(app, "poor") == 2


def test_stored_runs_are_visible_only_to_their_token(app, client):
    run = post_run(client, TWO_NODES).json
    stored = client.get(f"/v1/runs/{run['runId']}", headers=DEV_AUTH)
    assert stored.status_code == 200 and stored.json == run
    app.extensions["store"].create_token("other", 10, secret="other-token")
    other = client.get(f"/v1/runs/{run['runId']}", headers={"Authorization": "Bearer other-token"})
    assert_error(other, 404, 404000)


def test_a_runs_graph_is_its_definitions_shape_without_payloads(app, client):
    """GET /v1/runs/<id>/graph (SPEC §14): what the run viewer draws, to the run's token."""
    body = {"definition": definition(
        "root>check", "check>yes", "check>each", "each>after",
        check={"type": "if", "payload": {"condition": {"$and": []}}},
        yes={"type": "log", "branch": "then", "payload": {"message": "s3cret-value"},
             "retry": {"maxAttempts": 2}},
        each={"type": "for-each", "branch": "else", "payload": {"array": [1]},
              "loopBody": ["item"]},
        item={"type": "log", "payload": {"message": "{{$item}}"}},
        after={"type": "log", "continueOnError": True, "payload": {"message": "done"}}),
        "timeoutMs": 5000}
    run = post_run(client, body).json
    answer = client.get(f"/v1/runs/{run['runId']}/graph", headers=DEV_AUTH)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    graph = answer.json
    assert graph["runId"] == run["runId"] and graph["deadlineMs"] == 5000
    assert graph["startedAt"] <= run["executionState"]["root"]["startedAt"]
    assert graph["nodes"] == {
        "root": {"type": "manual", "level": 0, "children": ["check"]},
        "check": {"type": "if", "level": 1, "children": ["yes", "each"]},
        "yes": {"type": "log", "level": 2, "children": [], "branch": "then", "maxAttempts": 2},
        "each": {"type": "for-each", "level": 2, "children": ["after"], "branch": "else",
                 "loopBody": ["item"]},
        "after": {"type": "log", "level": 3, "children": [], "continueOnError": True},
        "item": {"type": "log", "level": 3, "children": [], "loop": "each"}}
    assert "s3cret" not in answer.get_data(as_text=True)
    app.extensions["store"].create_token("other", 10, secret="other-token")
    other = client.get(f"/v1/runs/{run['runId']}/graph",
                       headers={"Authorization": "Bearer other-token"})
    assert_error(other, 404, 404000)
    assert_error(client.get("/v1/runs/run_none/graph", headers=DEV_AUTH), 404, 404000)


def test_a_run_stored_without_a_graph_has_a_null_one(app, client):
    store = app.extensions["store"]
    store.start_run("run_old", store.token_by_name("dev").id, None, 1, 60)
    graph = client.get("/v1/runs/run_old/graph", headers=DEV_AUTH).json
    assert graph == {"runId": "run_old", "startedAt": None, "deadlineMs": None, "nodes": None}


def test_client_run_ids_cannot_be_reused(client):
    body = {**TWO_NODES, "runId": "run_mine_1"}
    assert post_run(client, body).json["runId"] == "run_mine_1"
    again = assert_error(post_run(client, body), 400, 400079)
    assert "runId" in again["errors"]


def test_run_ids_are_unique_per_token_not_across_tokens(app, client):
    """Another token's run of the same id is neither revealed nor blocking (SPEC §8)."""
    app.extensions["store"].create_token("other", 10, secret="other-token")
    other = {"Authorization": "Bearer other-token"}
    body = {**TWO_NODES, "runId": "run_invoice_42"}
    mine = post_run(client, body).json
    theirs = client.post("/v1/runs/sync", json={**body, "payload": {"message": "bye"}},
                         headers=other)
    assert theirs.status_code == 200 and theirs.json["runId"] == "run_invoice_42"
    assert_error(client.post("/v1/runs/sync", json=body, headers=other), 400, 400079)
    assert_error(post_run(client, body), 400, 400079)
    assert client.get("/v1/runs/run_invoice_42", headers=DEV_AUTH).json == mine
    assert client.get("/v1/runs/run_invoice_42", headers=other).json == theirs.json
    assert balance(app, "other") == 9


def test_cancelling_a_finished_run_is_409_with_its_status(client):
    ran = post_run(client, TWO_NODES).json
    body = assert_error(client.post(f"/v1/runs/{ran['runId']}/cancel", json={},
                                    headers=DEV_AUTH), 409, 409000)
    assert body["runId"] == ran["runId"] and body["status"] == "success"


def test_a_cancel_needs_no_body(client):
    """POST /v1/runs/<id>/cancel takes no body: sent without one (no Content-Type), it
    is answered for the run, not refused as 415."""
    ran = post_run(client, TWO_NODES).json
    assert_error(client.post(f"/v1/runs/{ran['runId']}/cancel", headers=DEV_AUTH),
                 409, 409000)
    assert_error(client.post("/v1/runs/nope/cancel", headers=DEV_AUTH), 404, 404000)
    assert_error(client.post("/v1/runs/nope/cancel", data="x", content_type="text/plain",
                             headers=DEV_AUTH), 404, 404000)  # a body is ignored
    assert_error(client.post("/v1/runs/nope/cancel"), 401, 401000)  # the token still first


def test_stored_runs_are_served_as_stored_and_enveloped_as_text(app, client):
    """GET serves the stored text as it is, and /b3os wraps it without parsing it."""
    store = app.extensions["store"]
    token = store.token_by_name("dev")
    store.start_run("run_stored", token.id, None, 1, time.time() + 60)
    text = '{"runId":"run_stored", "status":"success","totalCu":1, "n":1.50}'  # not canonical
    store.finish_run("run_stored", token.id, "success", 1, text)
    response = client.get("/v1/runs/run_stored", headers=DEV_AUTH)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_data(as_text=True) == text
    wrapped = client.get("/b3os/v1/runs/run_stored", headers={**DEV_AUTH, "X-Request-ID": "r1"})
    assert wrapped.get_data(as_text=True) == (
        '{"code":0,"message":"success","data":' + text + ',"requestId":"r1"}')


def test_b3os_envelope_holds_jsonify_answers_compactly(client):
    response = client.get("/b3os/v1/node-types", headers={**DEV_AUTH, "X-Request-ID": "r2"})
    text = response.get_data(as_text=True)
    assert text == json.dumps(response.json, separators=(",", ":"))
    assert response.json["code"] == 0 and response.json["requestId"] == "r2"
    assert response.json["data"]["nodeTypes"]


def post_path(app, path_info: str):
    """POST a run to this exact PATH_INFO (the test client would read ``//x`` as a host)."""
    environ = EnvironBuilder(method="POST", headers=DEV_AUTH, json=TWO_NODES).get_environ()
    environ["PATH_INFO"] = path_info
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), dict(headers), json.loads(b"".join(body))


@pytest.mark.parametrize("path", ["/v1//runs/sync", "/v1/runs//sync", "/b3os//v1/runs/sync"])
def test_doubled_slashes_are_a_json_404_not_an_html_redirect(app, path):
    status, headers, body = post_path(app, path)
    assert (status, body["code"]) == (404, 404000) and "Location" not in headers


def test_leading_slashes_are_ignored_as_werkzeug_does(app):
    status, _, body = post_path(app, "//v1/runs/sync")
    assert status == 200 and body["status"] == "success"


def test_validate_endpoint_runs_checks_and_charges_nothing(app, client):
    before = balance(app)
    response = client.post("/v1/workflows/validate", headers=DEV_AUTH,
                           json={**TWO_NODES, "name": "greeting"})
    assert response.json == {"valid": True, "nodeCount": 2, "levels": [["root"], ["greet"]],
                             "loops": {}, "warnings": {}}
    assert balance(app) == before
    bad = client.post("/v1/workflows/validate", headers=DEV_AUTH, json={"definition": {}})
    assert_error(bad, 400, 400228)


def test_validate_warns_of_unknown_payload_keys_which_a_run_ignores(app, client):
    body = {"definition": definition("root>greet", greet={
        "type": "hello-world", "payload": {"nmae": "Ann", "title": "greeting"}})}
    # The root's payload keys are defaults of its result, all read: no warning.
    body["definition"]["nodes"]["root"]["payload"] = {"region": "eu"}
    response = client.post("/v1/workflows/validate", headers=DEV_AUTH, json=body)
    assert response.status_code == 200
    assert response.json["warnings"] == {
        "definition.nodes.greet.payload.nmae": [
            "Not a field of hello-world: ignored. Did you mean 'name'?"],
        "definition.nodes.greet.payload.title": ["Not a field of hello-world: ignored."]}
    app.config["MAX_PROBLEMS"] = 1
    listed = client.post("/v1/workflows/validate", headers=DEV_AUTH, json=body).json
    assert list(listed["warnings"]) == ["definition.nodes.greet.payload.nmae", "_truncated"]
    run = post_run(client, body)  # accepted, as B3OS definitions carry such keys
    assert run.json["executionState"]["greet"]["result"]["message"] == "Hello, World!"


def test_a_missing_required_key_names_its_likely_misspelling_in_the_400(client):
    body = {"definition": definition("root>wait", wait={
        "type": "delay", "payload": {"delay_ms": 10}})}
    for route in ("/v1/runs/sync", "/v1/workflows/validate"):
        response = client.post(route, headers=DEV_AUTH, json=body)
        assert_error(response, 400, 400228)
        assert response.json["errors"] == {"definition.nodes.wait.payload.delayMs": [
            "Missing data for required field. The payload has 'delay_ms', which delay does "
            "not know and ignores: a misspelling of 'delayMs'?"]}


def test_each_run_logs_one_summary_line(app, client, tmp_path):
    run = post_run(client, TWO_NODES, **{"X-Request-ID": "req-summary"}).json
    lines = [json.loads(line) for line in
             (tmp_path / "log" / "app.log").read_text().splitlines()]
    summary = [entry for entry in lines if entry["message"] == "run finished"]
    assert len(summary) == 1
    assert summary[0]["runId"] == run["runId"] and summary[0]["requestId"] == "req-summary"
    assert summary[0]["status"] == "success" and summary[0]["nodeCount"] == 2
    node_log = [e for e in lines if e.get("nodeId") == "greet"]
    assert node_log and node_log[0]["requestId"] == "req-summary"


def test_too_many_runs_in_flight_is_429_after_the_balance_check(app, client):
    app.config["MAX_CONCURRENT_RUNS"] = 1
    store = app.extensions["store"]
    token = store.token_by_name("dev")
    store.start_run("run_in_flight", token.id, None, 1, time.time() + 60)
    response = post_run(client, TWO_NODES)
    assert_error(response, 429, 429000)
    assert response.headers["Retry-After"] == "1"
    store.create_token("broke", 0, secret="broke-token")
    store.start_run("run_broke", store.token_by_name("broke").id, None, 0, time.time() + 60)
    poor = client.post("/v1/runs/sync", json=TWO_NODES,
                       headers={"Authorization": "Bearer broke-token"})
    assert_error(poor, 402, 402000)  # balance is checked before concurrency


def test_an_unavailable_store_is_503_not_500(app, client, tmp_path):
    store = app.extensions["store"]
    store.close()
    (tmp_path / "blocked").write_text("a file where the store's directory should be")
    store.path = str(tmp_path / "blocked" / "runner.sqlite3")
    body = assert_error(post_run(client, TWO_NODES), 503, 503000)
    assert "Traceback" not in json.dumps(body)
    assert post_run(client, TWO_NODES).headers["Retry-After"] == "5"


@pytest.mark.parametrize("path", ["/v1/runs/sync", "/b3os/v1/runs/sync"])
def test_run_answers_are_compact_json(client, path):
    """No spaces after separators, as in the README's example (and fewer bytes)."""
    body = {"definition": definition("root>say", say={"type": "log",
                                                     "payload": {"message": "hi"}})}
    response = client.post(path, json=body, headers=DEV_AUTH)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert text == json.dumps(response.json, separators=(",", ":"))


def test_a_run_sweeps_the_runs_of_dead_workers_now_and_then(app, client, monkeypatch):
    from app import runs

    store = app.extensions["store"]
    token = store.token_by_name("dev")
    store.start_run("run_orphan", token.id, None, 5, -1)  # its hard limit has passed
    monkeypatch.setitem(runs._due, "sweep", 0.0)
    answer = client.post("/v1/runs/sync", json={"definition": definition()}, headers=DEV_AUTH)
    assert answer.status_code == 200
    with store._db.reading() as db:  # read the row itself: a read through the API sweeps
        row = db.execute("SELECT status, reserved FROM runs WHERE id = 'run_orphan'").fetchone()
    assert (row["status"], row["reserved"]) == ("failure", 0)
    assert balance(app) == token.balance  # its 5 CU released
    # ...and not again within the minute: another orphan waits for the next sweep.
    store.start_run("run_orphan_2", token.id, None, 5, -1)
    client.post("/v1/runs/sync", json={"definition": definition()}, headers=DEV_AUTH)
    with store._db.reading() as db:
        row = db.execute("SELECT status FROM runs WHERE id = 'run_orphan_2'").fetchone()
    assert row["status"] == "running"


@pytest.mark.parametrize("path", ["/v1/runs/run_none/cancel", "/b3os/v1/runs/run_none/cancel"])
def test_a_cancel_is_a_bare_post(client, path):
    """A cancel reads no body: none (curl -X POST), or any, is not a 415 or a 400."""
    assert_error(client.post(path, headers=DEV_AUTH), 404, 404000)
    assert_error(client.post(path, data=b"x", content_type="text/plain", headers=DEV_AUTH),
                 404, 404000)
    assert_error(client.post(path, headers={}), 401, 401000)  # the token is still checked


def test_cancelling_a_finished_run_is_409(client):
    ran = post_run(client, {"definition": definition(), "runId": "run_done"}).json
    for path in ("/v1/runs/run_done/cancel", "/b3os/v1/runs/run_done/cancel"):
        body = assert_error(client.post(path, headers=DEV_AUTH), 409, 409000)
        assert (body["runId"], body["status"]) == ("run_done", ran["status"])


def test_a_token_disabled_after_its_lookup_starts_no_run(client, app):
    """Lookups are kept a few seconds per process; a run's reservation reads `enabled`
    in the store, so a token disabled meanwhile starts nothing (SPEC §8)."""
    store = app.extensions["store"]
    store.create_token("soon-off", 10, secret="soon-off-token")
    auth = {"Authorization": "Bearer soon-off-token"}
    assert raw_post(client, json.dumps(TWO_NODES), headers=auth).status_code == 200
    store.set_enabled("soon-off", False)
    assert_error(raw_post(client, json.dumps(TWO_NODES), headers=auth), 403, 403000)
    assert store.token_by_name("soon-off").balance == 10 - 1  # the first run's CU only


def test_every_json_answer_ends_at_its_closing_bracket(client):
    """One rule for every JSON body, answered or stored, enveloped or not, error or not:
    no newline after the text (a stored run is served as it is stored, and a stream's
    run.finished data is the plain answer's text)."""
    ran = post_run(client, {**TWO_NODES, "runId": "run_ends"})
    streamed = client.post("/v1/runs/sync", json={**TWO_NODES, "runId": "run_ends2"},
                           headers={**DEV_AUTH, "Accept": "text/event-stream"})
    finished = streamed.get_data(as_text=True).split("event: run.finished\ndata: ")[1]
    assert finished.split("\n")[0] == client.get("/v1/runs/run_ends2",
                                                 headers=DEV_AUTH).get_data(as_text=True)
    answers = [
        ran, client.get("/v1/runs/run_ends", headers=DEV_AUTH),
        client.get("/v1/runs/run_ends/graph", headers=DEV_AUTH),
        client.get("/v1/runs", headers=DEV_AUTH), client.get("/v1/balance", headers=DEV_AUTH),
        client.get("/v1/node-types", headers=DEV_AUTH),
        client.post("/v1/workflows/validate", json=TWO_NODES, headers=DEV_AUTH),
        client.post("/v1/runs", json=TWO_NODES, headers=DEV_AUTH),
        client.post("/v1/runs/run_ends/cancel", headers=DEV_AUTH),  # 409
        client.get("/livez"), client.get("/readyz"), client.get("/openapi.json"),
        client.get("/b3os/v1/balance", headers=DEV_AUTH),
        client.get("/b3os/v1/runs/run_ends", headers=DEV_AUTH),
        post_run(client, {"definition": {"nodes": {}}}),  # 400
        client.get("/v1/balance"),  # 401
        client.get("/v1/nothing", headers=DEV_AUTH),  # 404
        client.delete("/v1/runs/sync", headers=DEV_AUTH),  # 405
        raw_post(client, b"x" * (BIG + 1)),  # 413
        raw_post(client, b"{}", content_type="text/plain"),  # 415
        client.post("/b3os/v1/runs/sync", json={}, headers=DEV_AUTH),  # 400
    ]
    assert {a.status_code for a in answers} >= {200, 202, 400, 401, 404, 405, 409, 413, 415}
    for answer in answers:
        assert answer.mimetype == "application/json", answer.request.path
        text = answer.get_data(as_text=True)
        assert text.endswith("}") and json.loads(text), (answer.request.path, text[-40:])


@pytest.mark.parametrize(("accept", "streamed"), [
    (None, False), ("", False), ("application/json", False), ("*/*", False),
    ("text/event-stream", True), ("text/*", True),
    ("text/event-stream;q=0, application/json", False),
    ("application/json;q=0.5, text/event-stream", True),
    ("application/json, text/event-stream", False),  # equal: the first asked for
    ("image/png", False),
])
def test_a_run_is_streamed_when_its_accept_header_prefers_event_streams(client, accept,
                                                                        streamed):
    headers = {**DEV_AUTH, **({"Accept": accept} if accept is not None else {})}
    response = client.post("/v1/runs/sync", json={"definition": definition()},
                           headers=headers)
    assert response.status_code == 200
    assert response.mimetype == ("text/event-stream" if streamed else "application/json")
    body = response.get_data(as_text=True)
    assert ("event: run.finished" in body) is streamed


def test_a_runs_graph_is_json_whatever_its_client_run_id(client):
    """The graph's head is written as dumps writes it: a runId that needs an escape (the
    pattern's ``$`` lets a final newline through) is escaped too."""
    for run_id in ("run_Mine_9", "run_line\n"):
        ran = post_run(client, {**TWO_NODES, "runId": run_id, "timeoutMs": 700})
        assert ran.status_code == 200 and ran.json["runId"] == run_id
        answer = client.get(f"/v1/runs/{quote(run_id)}/graph", headers=DEV_AUTH)
        assert answer.status_code == 200
        graph = json.loads(answer.get_data(as_text=True))
        assert graph["runId"] == run_id and graph["deadlineMs"] == 700
        assert graph["startedAt"] <= ran.json["executionState"]["root"]["startedAt"]


def test_a_streamed_runs_headers_are_werkzeugs_for_an_event_stream(app):
    """A stream's headers are copied from a list Werkzeug made once (api._STREAM_HEADERS),
    its body handed over as it is: the headers are what Werkzeug makes of the type and
    sse.HEADERS, in that order, with the request id and no length; the answer's
    iterable is the stream itself, closed once read."""
    environ = EnvironBuilder(path="/v1/runs/sync", method="POST", json=TWO_NODES, headers={
        **DEV_AUTH, "Accept": "text/event-stream", "X-Request-ID": "req-1"}).get_environ()
    started = []
    answer = app(environ, lambda status, headers, exc_info=None: started.append(
        (status, headers)))
    try:
        body = b"".join(answer)
    finally:
        answer.close()
    assert started == [("200 OK", [
        ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"),
        ("Content-Type", "text/event-stream; charset=utf-8"), ("X-Request-ID", "req-1")])]
    assert body.startswith(b"id: 1\nevent: run.started\ndata: {\"runId\":\"run_")
    assert b"\nevent: run.finished\n" in body and body.endswith(b"}\n\n")


def test_a_literal_no_double_holds_is_refused_where_it_is_written(client):
    response = post_run(client, {"definition": definition("root>a", a={
        "type": "log", "payload": {"message": "{{ root.result.x || 1e400 }}"}})})
    assert response.status_code == 400 and response.json["code"] == 400228
    assert "out of range" in response.json["errors"]["definition.nodes.a.payload.message"][0]
