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

bp = Blueprint("openapi", __name__)

COMPONENTS = {
    "RunRequest": schemas.RunRequestSchema, "ValidateRequest": schemas.ValidateRequestSchema,
    "Definition": schemas.DefinitionSchema, "Node": schemas.NodeSchema,
    "Run": schemas.RunSchema, "Error": schemas.ErrorSchema,
    "ValidationResult": schemas.ValidationResultSchema, "NodeTypes": schemas.NodeTypesSchema,
}
ERRORS = {
    400: "Invalid body: not a JSON object (400000), invalid definition (400228), root not "
         "manual (400229), payload not matching inputSchema (400230), malformed runId "
         "(400078), runId already used (400079)",
    401: "No or unknown token (401000)", 402: "Compute-unit balance too low (402000)",
    403: "Token disabled (403000)", 404: "No such run (404000)",
    413: "Body larger than the limit (413000)", 415: "Content type is not JSON (415000)",
    429: "Too many concurrent runs for this token (429000)",
    500: "Unexpected error (500000)",
}
RUN_ERRORS = (400, 401, 402, 403, 413, 415, 429, 500)
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
    spec = APISpec(title="Workflow runner", version="1.0.0", openapi_version="3.0.3",
                   plugins=[plugin], info={"description": "Runs B3OS workflow definitions "
                                           "synchronously."})
    for field, kind in ((Str, "string"), (Bool, "boolean"), (Int, "integer"),
                        (Num, "number"), (Obj, "object"), (Arr, "array")):
        plugin.map_to_openapi_type(field, kind, None)
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for path, operations in _paths().items():
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


def _errors(*codes: int) -> dict:
    out = {str(code): _json("Error", ERRORS[code]) for code in codes}
    if "429" in out:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    if "401" in out:
        out["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


PAGE = {"200": {"description": "A page for people (SPEC §14)",
                "content": {"text/html": {"schema": {"type": "string"}}}}}


def _paths() -> dict:
    secured = {"security": [{"bearer": []}]}
    return {
        "/v1/runs/sync": {"post": {
            **secured, "summary": "Validate and run a workflow; 200 whatever its outcome",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/RunRequest"}}}},
            "responses": {"200": _json("Run", "The run's full state"), **_errors(*RUN_ERRORS)}}},
        "/v1/runs/{runId}": {"get": {
            **secured, "summary": "A stored run, to the token that made it",
            "parameters": [{"name": "runId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json("Run"), **_errors(401, 403, 404, 413, 500)}}},
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
        "/livez": {"get": {"summary": "The process is alive",
                           "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Ready: store writable, not shutting down",
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
    """Every /v1 route again under /b3os, its 2xx body inside B3OS's envelope."""
    for path, operations in list(document["paths"].items()):
        if not path.startswith("/v1/"):
            continue
        mirrored = copy.deepcopy(operations)
        for operation in mirrored.values():
            ok = operation["responses"]["200"]["content"]["application/json"]
            ok["schema"] = {"type": "object", "required": ["code", "message", "data"],
                            "properties": {"code": {"type": "integer", "enum": [0]},
                                           "message": {"type": "string"},
                                           "data": ok["schema"],
                                           "requestId": {"type": "string"}}}
        document["paths"]["/b3os" + path] = mirrored


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
