"""The ``/v1`` blueprint: thin views over validation, the engine and the store.

Checks run in SPEC §6's order: routing (404/405, before this blueprint sees the
request), size (413), token (401/403), content type (415), JSON (400000) in
``before_request``; then body checks (400xxx), balance (402) in the views.
"""
from __future__ import annotations

import contextlib
import logging
import time

from flask import Blueprint, current_app, g, jsonify, request

from . import config as config_module
from . import logconfig, metrics, openapi
from .engine import Outcome, Run, new_run_id
from .errors import CODE_MESSAGES, DUPLICATE_RUN_ID, ApiError, error_response
from .jsonbody import parse_json, read_body
from .redact import Redactor
from .store import DuplicateRun, InsufficientBalance, StoreUnavailable, TooManyRuns
from .validation import Invalid, Limits, check_request

bp = Blueprint("api", __name__)
run_log = logging.getLogger("app.runs")

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
    """Validate, reserve the worst-case cost, run, store, answer."""
    config, store = current_app.config, current_app.extensions["store"]
    plan = check_request(g.body, _limits())
    run_id = plan.run_id or new_run_id()
    with logconfig.batched():  # the run's log lines, written together at its end
        _reserve(store, config, run_id, plan.worst_case_cu)
        outcome = _execute(store, config, plan, run_id)
        store.finish_run(run_id, g.token.id,
                         {"status": outcome.status, "totalCu": outcome.total_cu}, outcome.text)
        metrics.record_run(outcome)
        _prune_now_and_then(store, config["RUN_RETENTION_DAYS"])
        run_log.info("run finished", extra={
            "runId": run_id, "status": outcome.status, "durationMs": outcome.duration_ms,
            "nodeCount": len(plan.nodes), "totalCu": outcome.total_cu,
            "errorCode": (outcome.error or {}).get("code")})
    return current_app.response_class(outcome.text, mimetype="application/json")


def _reserve(store, config, run_id: str, worst_case_cu: int) -> None:
    """Record the run and reserve its cost: 400079, 402 or 429 when that is refused."""
    # Past this moment a run still marked running is dead: gunicorn kills a worker
    # `timeout` (deadline + 30 s) into a request.
    expires_at = time.time() + config["RUN_DEADLINE_MS"] / 1000 + 60
    try:
        store.start_run(run_id, g.token.id, g.request_id, worst_case_cu, expires_at,
                        config["MAX_CONCURRENT_RUNS"])
    except DuplicateRun:
        raise ApiError(400, DUPLICATE_RUN_ID, "runId already used",
                       errors={"runId": [f"A run named {run_id!r} exists already."]}) from None
    except InsufficientBalance as short:
        raise ApiError(402, balance=short.balance, required=short.required) from None
    except TooManyRuns:
        raise ApiError(429, headers={"Retry-After": "1"}) from None


def _run_settings(config) -> dict:
    """The settings node handlers may read (``ctx.settings``): every RUNNER_ setting."""
    settings = current_app.extensions.get("run_settings")
    if settings is None:
        settings = current_app.extensions["run_settings"] = {
            name: config[name] for name in config_module.SETTINGS}
    return settings


def _execute(store, config, plan, run_id: str) -> Outcome:
    """The run's outcome, secrets redacted (in the logs written meanwhile too)."""
    token_id = g.token.id
    redactor = Redactor.for_request(plan.definition, plan.payload, plan.prop_values,
                                    plan.secrets)
    run = Run(plan, run_id, settings=_run_settings(config),
              deadline_ms=config["RUN_DEADLINE_MS"], redactor=redactor,
              on_progress=lambda attempts: store.record_attempts(run_id, token_id, attempts),
              started=g.received)
    redacting = logconfig.redactor.set(redactor)
    try:
        with metrics.IN_PROGRESS.track_inprogress():
            return run.run()
    except BaseException as error:  # a bug, or gunicorn stopping the worker (SystemExit)
        with contextlib.suppress(StoreUnavailable):  # the first error is the one to report
            # Charged for the attempts it started (SPEC §3); the rest is released.
            store.abort_run(run_id, token_id, run.started_attempts)
        if isinstance(error, SystemExit):
            # gunicorn's hard timeout: answer in our envelope; the worker exits after.
            raise ApiError(503, message="The run was stopped before it finished "
                           "(the server's hard time limit)", runId=run_id) from None
        raise
    finally:
        logconfig.redactor.reset(redacting)


_next_prune = 0.0


def _prune_now_and_then(store, retention_days: int) -> None:
    """Delete runs past their retention, at most once an hour per worker."""
    global _next_prune
    if time.monotonic() >= _next_prune:
        _next_prune = time.monotonic() + 3600
        store.prune(retention_days * 86400)


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
    plan = check_request(g.body, _limits(), validate_only=True)
    return jsonify({"valid": True, "nodeCount": len(plan.nodes), "levels": plan.levels})


@bp.get("/node-types")
def node_types():
    """Every node type with the JSON Schema of its payload."""
    return jsonify({"nodeTypes": openapi.node_types()})
