"""``/openapi.json``, generated from the marshmallow schemas the API itself uses."""
from __future__ import annotations

import copy
import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from . import schemas
from .dialect import Arr, Bool, Int, Num, Obj, Str
from .nodes import NODE_TYPES
from .nodes.base import NodeType
from .version import __version__

bp = Blueprint("openapi", __name__)

COMPONENTS = {
    "RunRequest": schemas.RunRequestSchema, "ValidateRequest": schemas.ValidateRequestSchema,
    "Definition": schemas.DefinitionSchema, "Node": schemas.NodeSchema,
    "Run": schemas.RunSchema, "Error": schemas.ErrorSchema,
    "ValidationResult": schemas.ValidationResultSchema, "NodeTypes": schemas.NodeTypesSchema,
    "RunStarted": schemas.RunStartedSchema, "RunSummary": schemas.RunSummarySchema,
    "RunList": schemas.RunListSchema, "Balance": schemas.BalanceSchema,
    "RunStartedEvent": schemas.RunStartedEventSchema,
    "NodeStartedEvent": schemas.NodeStartedEventSchema,
    "NodeRetryingEvent": schemas.NodeRetryingEventSchema,
    "NodeFinishedEvent": schemas.NodeFinishedEventSchema,
}
ERRORS = {
    400: "Invalid body: not a JSON object (400000), invalid definition (400228), root not "
         "manual (400229), payload not matching inputSchema (400230), malformed runId "
         "(400078), runId already used (400079)",
    401: "No or unknown token (401000)", 402: "Compute-unit balance too low (402000)",
    403: "Token disabled (403000)", 404: "No such run (404000)",
    409: "The run has finished already (409000); `status` says how",
    413: "Body larger than the limit (413000)", 415: "Content type is not JSON (415000)",
    429: "Too many concurrent runs for this token (429000)",
    500: "Unexpected error (500000)",
}
RUN_ERRORS = (400, 401, 402, 403, 413, 415, 429, 500)
EVENTS = (
    "Server-Sent Events (SPEC §12), each with an `id:` (its number, from 1), an `event:` "
    "and one `data:` line of JSON: `run.started` (RunStartedEvent), `node.started` "
    "(NodeStartedEvent), `node.retrying` (NodeRetryingEvent; the run's own stream only), "
    "`node.finished` (NodeFinishedEvent), then `run.finished`, whose data is the run's "
    "answer (Run) once stored. A `: keep-alive` comment line comes at least every 15 s; "
    "an `error` event (Error, 503000) ends a stream whose run the server's hard time "
    "limit stopped.")
EVENT_STREAM = {"schema": {"type": "string", "description": EVENTS}}
RUN_ID = {"name": "runId", "in": "path", "required": True, "schema": {"type": "string"}}
# GET /v1/runs/{runId}/graph (SPEC §14): the definition's shape, no payloads.
GRAPH = {"type": "object", "required": ["runId", "startedAt", "deadlineMs", "nodes"],
         "properties": {
             "runId": {"type": "string"},
             "startedAt": {"type": "string", "nullable": True},
             "deadlineMs": {"type": "integer", "nullable": True},
             "nodes": {"type": "object", "nullable": True, "additionalProperties": {
                 "type": "object", "required": ["type", "level", "children"],
                 "properties": {
                     "type": {"type": "string"}, "level": {"type": "integer"},
                     "children": {"type": "array", "items": {"type": "string"}},
                     "branch": {"type": "string", "enum": ["then", "else"]},
                     "loopBody": {"type": "array", "items": {"type": "string"}},
                     "loop": {"type": "string"}, "maxAttempts": {"type": "integer"},
                     "continueOnError": {"type": "boolean"}}}}}}


@functools.cache
def _spec() -> tuple[dict, MarshmallowPlugin]:
    plugin = MarshmallowPlugin()
    spec = APISpec(title="Workflow runner", version=__version__, openapi_version="3.0.3",
                   plugins=[plugin], info={"description": "Runs B3OS workflow definitions "
                                           "synchronously."})
    for field, kind in ((Str, "string"), (Bool, "boolean"), (Int, "integer"),
                        (Num, "number"), (Obj, "object"), (Arr, "array")):
        plugin.map_to_openapi_type(field, kind, None)
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, description in TAGS.items():
        spec.tag({"name": name, "description": description})
    for path, operations in _paths().items():
        for method, operation in operations.items():
            operation["operationId"], tag = OPERATIONS[(path, method)]
            operation["tags"] = [tag]
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _refine(document["components"]["schemas"])
    _add_b3os_mount(document)
    return document, plugin


def _refine(components: dict) -> None:
    """Shapes marshmallow leaves as plain objects: the definition and its nodes."""
    definition = {"$ref": "#/components/schemas/Definition"}
    for request in ("RunRequest", "ValidateRequest"):
        components[request]["properties"]["definition"] = definition
    components["Definition"]["properties"]["nodes"] = {
        "type": "object", "description": "node id → node; must contain `root` (type manual)",
        "required": ["root"],
        "additionalProperties": {"$ref": "#/components/schemas/Node"}}


def _json(schema: str, description: str = "OK") -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _errors(*codes: int, said: dict[int, str] | None = None) -> dict:
    """Error answers by status, each described as in ERRORS unless ``said`` otherwise."""
    said = said or {}
    out = {str(code): _json("Error", said.get(code, ERRORS[code])) for code in codes}
    if "429" in out:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    if "401" in out:
        out["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


def _events(description: str) -> dict:
    return {"description": description, "content": {"text/event-stream": EVENT_STREAM}}
# Every operation's name and group, which generated clients turn into their methods and
# classes; the /b3os copies are named b3os<Name>, in the group "b3os".
OPERATIONS = {
    ("/v1/runs/sync", "post"): ("runSync", "runs"),
    ("/v1/runs", "post"): ("startRun", "runs"),
    ("/v1/runs", "get"): ("listRuns", "runs"),
    ("/v1/runs/{runId}", "get"): ("getRun", "runs"),
    ("/v1/runs/{runId}/stream", "get"): ("followRun", "runs"),
    ("/v1/runs/{runId}/cancel", "post"): ("cancelRun", "runs"),
    ("/v1/runs/{runId}/graph", "get"): ("getRunGraph", "runs"),
    ("/v1/balance", "get"): ("getBalance", "account"),
    ("/v1/workflows/validate", "post"): ("validateWorkflow", "workflows"),
    ("/v1/node-types", "get"): ("listNodeTypes", "workflows"),
    ("/livez", "get"): ("livez", "service"),
    ("/readyz", "get"): ("readyz", "service"),
    ("/metrics", "get"): ("metrics", "service"),
    ("/openapi.json", "get"): ("openapi", "service"),
    ("/runs/{runId}", "get"): ("runPage", "pages"),
    ("/runs", "get"): ("runsPage", "pages"),
    ("/playground", "get"): ("playgroundPage", "pages"),
}
TAGS = {
    "runs": "Run a workflow (waiting for it, streaming it, or not), follow, cancel, list "
            "and read runs",
    "workflows": "Check a workflow without running it; the node types",
    "account": "The calling token's compute units",
    "service": "Probes, metrics and this document (no token)",
    "pages": "Pages for people (HTML; they ask for a token themselves)",
    "b3os": "Every /v1 route again for B3OS's own clients, 2xx bodies in B3OS's envelope",
}
LIVEZ = {"type": "object", "required": ["status", "version"], "properties": {
    "status": {"type": "string", "enum": ["ok"]},
    "version": {"type": "string", "description": "The service's version"}}}
PAGE = {"200": {"description": "A page for people (SPEC §14)",
                "content": {"text/html": {"schema": {"type": "string"}}}}}


def _paths() -> dict:
    secured = {"security": [{"bearer": []}]}
    run_request = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/RunRequest"}}}}
    ran = _json("Run", "The run's full state; with `Accept: text/event-stream`, its events "
                "as they happen")
    ran["content"]["text/event-stream"] = EVENT_STREAM
    return {
        "/v1/runs/sync": {"post": {
            **secured, "summary": "Validate and run a workflow; 200 whatever its outcome",
            "requestBody": run_request,
            "responses": {"200": ran, **_errors(*RUN_ERRORS)}}},
        "/v1/runs": {
            "post": {
                **secured, "summary": "Validate, reserve and answer at once; the run goes on",
                "requestBody": run_request,
                "responses": {"202": {**_json("RunStarted", "Started: the run goes on "
                                              "on the worker that took it"),
                                      "headers": {"Location": {"schema": {"type": "string"}}}},
                              **_errors(*RUN_ERRORS)}},
            "get": {
                **secured, "summary": "The token's runs, newest first, a page at a time",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {
                        "type": "string", "enum": list(schemas.RUN_STATUSES)}},
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                    {"name": "cursor", "in": "query", "description": "`nextCursor` of the "
                     "page before", "schema": {"type": "string"}}],
                "responses": {"200": _json("RunList"), **_errors(400, 401, 403, 413, 500, said={
                    400: "Invalid query parameters (400000): `errors` names each"})}}},
        "/v1/runs/{runId}": {"get": {
            **secured, "summary": "A stored run, to the token that made it; a run in flight's "
                                  "state so far",
            "parameters": [RUN_ID],
            "responses": {"200": _json("Run"), **_errors(401, 403, 404, 413, 500)}}},
        "/v1/runs/{runId}/stream": {"get": {
            **secured, "summary": "Follow a run: what happened so far, then the rest",
            "parameters": [RUN_ID],
            "responses": {"200": _events("The run's events, to `run.finished`"),
                          **_errors(401, 403, 404, 413, 429, 500, said={
                              429: "This token follows RUNNER_MAX_FOLLOWERS runs already "
                                   "(429000)"})}}},
        "/v1/runs/{runId}/cancel": {"post": {
            **secured, "summary": "Stop a run in flight (no body)",
            "parameters": [RUN_ID],
            "responses": {"200": _json("Run", "Stopped: its answer, status `cancelled`"),
                          "202": _json("RunStarted", "Asked: not stopped within the wait "
                                       "(`cancelRequested`)"),
                          **_errors(401, 403, 404, 409, 413, 500)}}},
        "/v1/balance": {"get": {
            **secured, "summary": "The token's compute units",
            "responses": {"200": _json("Balance"), **_errors(401, 403, 413, 500)}}},
        "/v1/runs/{runId}/graph": {"get": {
            **secured, "summary": "What the run page draws a run on: its definition's shape "
                                  "(no payloads), when it started, its deadline",
            "parameters": [RUN_ID],
            "responses": {"200": {"description": "The run's graph (nodes null for a run "
                                                 "stored before graphs were)",
                                  "content": {"application/json": {"schema": GRAPH}}},
                          **_errors(401, 403, 404, 413, 500)}}},
        "/v1/workflows/validate": {"post": {
            **secured, "summary": "Every check, nothing run or charged",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ValidateRequest"}}}},
            "responses": {"200": _json("ValidationResult"),
                          **_errors(400, 401, 403, 413, 415, 500)}}},
        "/v1/node-types": {"get": {
            **secured, "summary": "Node types with the JSON Schemas of their payloads and results",
            "responses": {"200": _json("NodeTypes"), **_errors(401, 403, 413, 500)}}},
        "/livez": {"get": {"summary": "The process is alive, and its version",
                           "responses": {"200": {"description": "alive", "content": {
                               "application/json": {"schema": LIVEZ}}}}}},
        "/readyz": {"get": {"summary": "Ready: the store can be written",
                            "responses": {"200": {"description": "ready"},
                                          "503": _json("Error", "Not ready (503000)")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (restrict at the proxy)",
                             "responses": {"200": {"description": "text format", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI 3"}}}},
        "/runs/{runId}": {"get": {"summary": "The run page (HTML; asks for a token itself)",
                                  "parameters": [RUN_ID], "responses": PAGE}},
        "/runs": {"get": {"summary": "The runs list (HTML; asks for a token itself)",
                          "responses": PAGE}},
        "/playground": {"get": {"summary": "The playground (HTML; asks for a token itself)",
                                "responses": PAGE}},
    }


def _add_b3os_mount(document: dict) -> None:
    """Every /v1 route again under /b3os, its 2xx JSON bodies inside B3OS's envelope
    (streams are not wrapped)."""
    for path, operations in list(document["paths"].items()):
        if not path.startswith("/v1/"):
            continue
        mirrored = copy.deepcopy(operations)
        for operation in mirrored.values():
            name = operation["operationId"]
            operation["operationId"] = "b3os" + name[0].upper() + name[1:]
            operation["tags"] = ["b3os"]
            for status, answer in operation["responses"].items():
                ok = answer.get("content", {}).get("application/json")
                if status.startswith("2") and ok:
                    ok["schema"] = _enveloped(ok["schema"])
        document["paths"]["/b3os" + path] = mirrored


def _enveloped(schema: dict) -> dict:
    """``schema`` as the ``data`` of B3OS's envelope."""
    return {"type": "object", "required": ["code", "message", "data"],
            "properties": {"code": {"type": "integer", "enum": [0]},
                           "message": {"type": "string"}, "data": schema,
                           "requestId": {"type": "string"}}}


def document() -> dict:
    """The OpenAPI document (built once per process)."""
    return _spec()[0]


def payload_schema(node_type: NodeType) -> dict:
    """A node type's payload schema as JSON Schema."""
    return _spec()[1].converter.schema2jsonschema(node_type.payload)


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3 document of every route."""
    return jsonify(document())


def node_types() -> list[dict]:
    """Every node type with the JSON Schemas of its payload and of its result."""
    return [{"type": name, "payload": payload_schema(node_type),
             "result": copy.deepcopy(node_type.result)}
            for name, node_type in NODE_TYPES.items()]
