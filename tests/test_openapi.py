"""/openapi.json documents every route, and the app keeps to it (schemathesis, in-process)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import DEV_AUTH


def test_document_lists_every_route(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    documented = {path.replace("{runId}", "<run_id>") for path in document["paths"]}
    routes = {rule.rule for rule in app.url_map.iter_rules()
              if rule.endpoint not in {"static", "pages.static"}}  # files, not routes
    assert routes == documented
    run_request = document["components"]["schemas"]["RunRequest"]
    assert run_request["additionalProperties"] is False
    assert run_request["properties"]["runId"]["pattern"] == "^run_[A-Za-z0-9_]{1,64}$"


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


@pytest.mark.parametrize("path", ["/v1/runs/sync", "/v1/runs/{runId}", "/v1/workflows/validate",
                                  "/v1/node-types", "/b3os/v1/runs/sync", "/livez", "/readyz",
                                  "/v1/runs/{runId}/graph", "/playground"])
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
            case.call_and_validate(headers=DEV_AUTH, excluded_checks=[positive_data_acceptance])

        check()
