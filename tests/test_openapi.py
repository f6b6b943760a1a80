"""/openapi.json documents every route, and the app keeps to it (schemathesis, in-process)."""
from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import schemas
from app.client import parse_events
from tests.helpers import DEV_AUTH, definition


def test_document_lists_every_route_and_method(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    documented = {(path.replace("{runId}", "<run_id>"), method.upper())
                  for path, operations in document["paths"].items() for method in operations}
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules()
              if rule.endpoint not in {"static", "pages.static"}  # files, not routes
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented
    run_request = document["components"]["schemas"]["RunRequest"]
    assert run_request["additionalProperties"] is False
    assert run_request["properties"]["runId"]["pattern"] == "^run_[A-Za-z0-9_]{1,64}$"


def test_every_operation_is_named_once_and_tagged(client):
    """Generated clients name their methods after operationId and group them by tag."""
    document = client.get("/openapi.json").json
    operations = [(path, method, operation) for path, methods in document["paths"].items()
                  for method, operation in methods.items()]
    names = [operation.get("operationId") for _, _, operation in operations]
    assert None not in names and len(set(names)) == len(names) == len(operations)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", name) for name in names)
    declared = {tag["name"] for tag in document["tags"]}
    assert all(tag["description"] for tag in document["tags"])
    for path, method, operation in operations:
        assert len(operation["tags"]) == 1 and operation["tags"][0] in declared, (path, method)
        assert (operation["tags"] == ["b3os"]) == path.startswith("/b3os/")
    assert document["paths"]["/v1/runs/sync"]["post"]["operationId"] == "runSync"
    assert document["paths"]["/b3os/v1/runs/sync"]["post"]["operationId"] == "b3osRunSync"


def test_node_types_list_payload_json_schemas(client):
    types = {t["type"]: t["payload"] for t in
             client.get("/v1/node-types", headers=DEV_AUTH).json["nodeTypes"]}
    assert "http-request" in types and "if" in types
    assert types["log"]["required"] == ["message"]
    assert types["delay"]["properties"]["delayMs"]["maximum"] == 60000


def test_node_types_list_result_json_schemas(client):
    types = {t["type"]: t["result"] for t in
             client.get("/v1/node-types", headers=DEV_AUTH).json["nodeTypes"]}
    assert types["if"]["properties"]["branch"]["enum"] == ["then", "else"]
    assert types["log"]["required"] == ["message", "loggedAt"]
    assert types["manual"]["required"] == ["triggeredAt"]
    assert types["manual"]["additionalProperties"] is True  # the payload's keys too


def test_streams_and_run_control_are_documented(client):
    document = client.get("/openapi.json").json
    paths, components = document["paths"], document["components"]["schemas"]
    streamed = paths["/v1/runs/sync"]["post"]["responses"]["200"]["content"]
    assert set(streamed) == {"application/json", "text/event-stream"}
    followed = paths["/v1/runs/{runId}/stream"]["get"]["responses"]
    assert set(followed["200"]["content"]) == {"text/event-stream"} and "429" in followed
    for event in ("RunStartedEvent", "NodeStartedEvent", "NodeRetryingEvent",
                  "NodeFinishedEvent"):
        assert event in components and event in streamed["text/event-stream"]["schema"][
            "description"]
    started = paths["/v1/runs"]["post"]["responses"]["202"]
    assert started["content"]["application/json"]["schema"]["$ref"].endswith("/RunStarted")
    assert "Location" in started["headers"]
    listing = paths["/v1/runs"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"status", "limit", "cursor"}
    assert set(paths["/v1/runs/{runId}/cancel"]["post"]["responses"]) >= {
        "200", "202", "404", "409"}
    assert components["Run"]["properties"]["status"]["enum"] == [
        "running", "success", "failure", "cancelled"]
    assert set(components["Balance"]["required"]) == {"balance", "reserved", "used"}
    # Under /b3os, JSON answers are enveloped, streams are not.
    b3os = paths["/b3os/v1/runs"]["post"]["responses"]["202"]["content"]["application/json"]
    assert b3os["schema"]["properties"]["data"]["$ref"].endswith("/RunStarted")
    b3os_streamed = paths["/b3os/v1/runs/sync"]["post"]["responses"]["200"]["content"]
    assert b3os_streamed["text/event-stream"] == streamed["text/event-stream"]


EVENT_SHAPES = {"run.started": schemas.RunStartedEventSchema,
                "node.started": schemas.NodeStartedEventSchema,
                "node.retrying": schemas.NodeRetryingEventSchema,
                "node.finished": schemas.NodeFinishedEventSchema,
                "run.finished": schemas.RunSchema}


def test_streamed_events_keep_to_their_documented_shapes(client):
    flaky = definition("root>flaky", "flaky>after",
                       flaky={"type": "delay", "timeoutMs": 50, "payload": {"delayMs": 1000},
                              "retry": {"maxAttempts": 2, "initialDelayMs": 10}},
                       after={"type": "log", "payload": {"message": "never"}})
    response = client.post("/v1/runs/sync", json={"definition": flaky},
                           headers={**DEV_AUTH, "Accept": "text/event-stream"})
    assert response.mimetype == "text/event-stream"
    events = list(parse_events(response.get_data().splitlines(keepends=True)))
    assert {event.name for event in events} == set(EVENT_SHAPES)
    for event in events:  # (unknown keys are refused, but by the run's own schema)
        assert EVENT_SHAPES[event.name]().validate(event.data) == {}, event


@pytest.mark.parametrize("path", ["/v1/runs/sync", "/v1/runs/{runId}", "/v1/workflows/validate",
                                  "/v1/node-types", "/b3os/v1/runs/sync", "/livez", "/readyz",
                                  "/v1/runs", "/v1/runs/{runId}/cancel",
                                  "/v1/runs/{runId}/stream", "/v1/balance", "/b3os/v1/runs"])
def test_api_keeps_to_its_document(app, path):
    """No 500s, only documented status codes, bodies matching their schemas."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != path:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # A JSON Schema cannot say "no cycles" or "references only ancestors", so a
            # schema-valid definition may still be a documented 400: that check is off.
            # In-process calls do not undo a Content-Encoding: ask for none (the app's gzip
            # is tested on real gunicorn, tests/test_operating.py).
            case.call_and_validate(headers={**DEV_AUTH, "Accept-Encoding": "identity"},
                                   excluded_checks=[positive_data_acceptance])

        check()
