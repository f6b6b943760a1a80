"""The ``/v1`` blueprint: thin views over validation, a run's life and the store.

Checks run in SPEC §6's order: routing (404/405, before this blueprint sees the
request), size (413), token (401/403), content type (415), JSON (400000) in
``before_request``; then body checks (400xxx) in the views, and the refusals of
``runs.run`` (400079, balance 402, 429, the hard time limit's 503) as answers.
A run itself (reserve, execute, store and charge, metrics, log) is app/runs.py,
which knows nothing of Flask.
"""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, jsonify, request

from . import config as config_module
from . import openapi, runs
from .errors import ApiError, error_response
from .jsonbody import parse_json, read_body
from .problems import CODE_MESSAGES, DUPLICATE_RUN_ID, Invalid
from .validation import Limits, check_request

bp = Blueprint("api", __name__)

BODY_METHODS = {"POST", "PUT", "PATCH"}


@bp.before_request
def admit() -> None:
    """Size, token, content type and JSON, in that order."""
    config = current_app.config
    raw = read_body(request.stream, request.content_length, config["MAX_BODY_BYTES"])
    g.received = time.monotonic()  # a run's deadline counts from here
    g.token = _authenticate()
    if request.method in BODY_METHODS:
        if not _is_json(request.mimetype):
            raise ApiError(415)
        g.body = parse_json(raw, config["MAX_JSON_DEPTH"])
        if not isinstance(g.body, dict):
            raise ApiError(400, message="Body must be a JSON object")


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json"))


def _authenticate():
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(401, headers={"WWW-Authenticate": 'Bearer realm="api"'})
    token = current_app.extensions["store"].token(secret)
    if token is None:
        raise ApiError(401, headers={
            "WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
    if not token.enabled:
        raise ApiError(403)
    return token


@bp.errorhandler(Invalid)
def invalid(error: Invalid):
    return error_response(400, error.code, CODE_MESSAGES[error.code], errors=error.errors)


def _limits() -> Limits:
    config = current_app.config
    return Limits(max_nodes=config["MAX_NODES"], run_deadline_ms=config["RUN_DEADLINE_MS"],
                  max_problems=config["MAX_PROBLEMS"])


@bp.post("/runs/sync")
def run_sync():
    """Validate, then the run's life (``runs.run``); its refusals as error answers."""
    run_request = check_request(g.body, _limits())
    try:
        outcome = runs.run(current_app.extensions["store"], _run_settings(), run_request,
                           g.token.id, g.request_id, g.received)
    except runs.DuplicateRun as duplicate:
        raise ApiError(400, DUPLICATE_RUN_ID, "runId already used", errors={
            "runId": [f"A run named {duplicate.run_id!r} exists already."]}) from None
    except runs.InsufficientBalance as short:
        raise ApiError(402, balance=short.balance, required=short.required) from None
    except runs.TooManyRuns:
        raise ApiError(429, headers={"Retry-After": "1"}) from None
    except runs.HardStop as stop:
        # gunicorn's hard timeout: answer in our envelope; the worker exits after.
        raise ApiError(503, message="The run was stopped before it finished "
                       "(the server's hard time limit)", runId=stop.run_id) from None
    return current_app.response_class(outcome.text, mimetype="application/json")


def _run_settings() -> dict:
    """The settings a run and its node handlers read (``ctx.settings``): every RUNNER_
    setting, taken from the app's config once."""
    settings = current_app.extensions.get("run_settings")
    if settings is None:
        config = current_app.config
        settings = current_app.extensions["run_settings"] = {
            name: config[name] for name in config_module.SETTINGS}
    return settings


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    """A stored run, only to the token that made it: its stored text, never parsed again."""
    text = current_app.extensions["store"].run_text(run_id, g.token.id)
    if text is None:
        raise ApiError(404, message=f"No run named {run_id!r}")
    return current_app.response_class(text, mimetype="application/json")


@bp.post("/workflows/validate")
def validate_workflow():
    """Every check of SPEC §2, nothing run, nothing charged."""
    plan = check_request(g.body, _limits(), validate_only=True).plan
    return jsonify({"valid": True, "nodeCount": len(plan.nodes), "levels": plan.levels,
                    "loops": plan.loops})


@bp.get("/node-types")
def node_types():
    """Every node type with the JSON Schema of its payload."""
    return jsonify({"nodeTypes": openapi.node_types()})
