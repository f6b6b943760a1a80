"""The ``/v1`` blueprint: thin views over validation, a run's life and the store.

Checks run in SPEC §6's order: routing (404/405, before this blueprint sees the
request), size (413), token (401/403), content type (415), JSON (400000) in
``before_request`` (the last two not for a cancel, which reads no body); then body
checks (400xxx) in the views, and the refusals of ``runs.run`` (400079, balance 402,
429, the hard time limit's 503) as answers.
A run itself (reserve, execute, store and charge, metrics, log) is app/runs.py,
which knows nothing of Flask; so is following a run from the store (app/follow.py).
Run control (SPEC §12): a sync run streamed as Server-Sent Events (app/sse.py), a run
started without waiting, followed, cancelled, listed, and the token's balance.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import logging
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.globals import request_ctx
from werkzeug.datastructures import Headers
from werkzeug.wsgi import LimitedStream, get_content_length

from . import config as config_module
from . import follow, openapi, runs, sse
from .errors import STORE_UNAVAILABLE, ApiError, error_response
from .jsonbody import parse_json, read_body, read_exactly
from .jstext import iso
from .payload_checks import unknown_keys
from .problems import CODE_MESSAGES, DUPLICATE_RUN_ID, Invalid
from .schemas import RUN_STATUSES
from .state import dumps
from .store import StoreUnavailable, Token
from .validation import Limits, check_request

bp = Blueprint("api", __name__)
log = logging.getLogger("app.api")

CANCEL_WAIT_S = 2  # how long a cancel waits to answer with the run's final state

BODY_METHODS = {"POST", "PUT", "PATCH"}
# POST views that read no body: a cancel is a bare POST (any body is ignored, never refused).
NO_BODY_VIEWS = {"cancel_run"}


@bp.before_request
def admit() -> None:
    """Size, token, content type and JSON, in that order."""
    # The request and g looked up once here, not at each use (each use of the proxies
    # `request` and `g` looks up the request's context again).
    req, state, app = (request._get_current_object(), g._get_current_object(),
                       current_app._get_current_object())
    config = app.config
    raw = _body(req, config)
    state.received = time.monotonic()  # a run's deadline counts from here
    state.token = _authenticate(req, state, app.extensions)
    if req.method in BODY_METHODS and _view_name(req) not in NO_BODY_VIEWS:
        if not _is_json(_mimetype(req)):
            raise ApiError(415)
        state.body = body = parse_json(raw, config["MAX_JSON_DEPTH"])
        if not isinstance(body, dict):
            raise ApiError(400, message="Body must be a JSON object")


def _body(req, config) -> bytes:
    """The body as Werkzeug's ``req.stream`` gives it, within MAX_BODY_BYTES (413 past
    it), the stream made here from the environ: Flask's ``req.stream`` looks the app up
    twice for its MAX_CONTENT_LENGTH, and wraps a body of known length in a
    ``LimitedStream`` whose every read is Python code."""
    limit, environ = config["MAX_BODY_BYTES"], req.environ
    if config["MAX_CONTENT_LENGTH"] is not None:  # (Flask's own limit: its stream)
        return read_body(req.stream, req.content_length, limit)
    length = _content_length(environ)
    if "wsgi.input_terminated" in environ:  # the server ends the body (gunicorn, chunked)
        return read_body(environ["wsgi.input"], length, limit)
    if length is None:  # nothing ends the body: Werkzeug reads none of it
        return b""
    if length > limit:  # (drained as Werkzeug would read it: to its length at most)
        return read_body(LimitedStream(environ["wsgi.input"], length), length, limit)
    return read_exactly(environ["wsgi.input"], length)


def _content_length(environ: dict) -> int | None:
    """The body's length as Werkzeug reads it (``get_content_length``): None when chunked
    or not given; the usual plain number read directly."""
    given = environ.get("CONTENT_LENGTH")
    if given is not None and given.isdigit() and given.isascii() and (
            "HTTP_TRANSFER_ENCODING" not in environ):
        return int(given)
    return get_content_length(environ)


def _mimetype(req) -> str:
    """``req.mimetype``, without parsing the Content-Type clients send."""
    given = req.environ.get("CONTENT_TYPE")
    return "application/json" if given == "application/json" else req.mimetype


def _view_name(req) -> str:
    """The view's own name, the same under /v1 and /b3os/v1."""
    return (req.endpoint or "").rpartition(".")[2]


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json"))


def _authenticate(req, state, extensions: dict):
    scheme, _, secret = req.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(401, headers={"WWW-Authenticate": 'Bearer realm="api"'})
    token = _token(secret, extensions)
    if token is None:
        raise ApiError(401, headers={
            "WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
    state.token_name = token.name  # in the line of a refusal, from here on
    if not token.enabled:
        raise ApiError(403)
    return token


# Tokens this app (one per process) has looked up lately, by secret: a request's token
# costs a store lookup at most every TOKEN_CACHE_S. A token disabled meanwhile is
# refused at once where it matters — its runs' reservations read `enabled` in the
# store — and by every other route after at most TOKEN_CACHE_S.
TOKEN_CACHE_S = 5.0
TOKEN_CACHE_SIZE = 1024


def _token(secret: str, extensions: dict) -> Token | None:
    known_tokens = extensions.setdefault("known_tokens", {})
    now = time.monotonic()
    known = known_tokens.get(secret)
    if known is not None and known[0] > now:
        return known[1]
    token = extensions["store"].token(secret)
    if token is not None:  # unknown secrets are never kept: they cannot fill the cache
        if len(known_tokens) >= TOKEN_CACHE_SIZE:
            known_tokens.clear()
        known_tokens[secret] = (now + TOKEN_CACHE_S, token)
    return token


@bp.errorhandler(Invalid)
def invalid(error: Invalid):
    return error_response(400, error.code, CODE_MESSAGES[error.code], errors=error.errors)


def _limits(config=None) -> Limits:
    config = current_app.config if config is None else config
    return Limits(max_nodes=config["MAX_NODES"], run_deadline_ms=config["RUN_DEADLINE_MS"],
                  max_problems=config["MAX_PROBLEMS"])


def _app_limits(app) -> Limits:
    """``_limits`` of the app's config, made once (a frozen value, as ``_run_settings``
    takes the settings once)."""
    limits = app.extensions.get("limits")
    if limits is None:
        limits = app.extensions["limits"] = _limits(app.config)
    return limits


@bp.post("/runs/sync")
def run_sync():
    """Validate, then the run's life (``runs.Life``); its refusals as error answers. With
    ``Accept: text/event-stream``, its events as they happen (SPEC §12)."""
    context, state = request_ctx._get_current_object(), g._get_current_object()
    app = context.app  # (and the request: one lookup for both)
    life = _reserved(check_request(state.body, _app_limits(app)), app, state,
                     stream=_wants_stream(context.request.environ.get("HTTP_ACCEPT")))
    if life.stream:
        return _event_stream(life.passes(), app, state.request_id)
    with _Refusals():
        outcome = life.finish()
    return app.response_class(outcome.text, content_type="application/json")


@bp.post("/runs")
def start_run():
    """Validate and reserve, answer 202, then run on this worker once the answer is
    written (SPEC §12): the same deadline, limits, charging and crash rules."""
    app, state = current_app._get_current_object(), g._get_current_object()
    life = _reserved(check_request(state.body, _app_limits(app)), app, state)
    response = app.response_class(
        dumps({"runId": life.run_id, "status": "running"}), status=202,
        mimetype="application/json", headers={"Location": f"{request.path}/{life.run_id}"})
    response.call_on_close(functools.partial(_finish_unanswered, life))
    return response


def _finish_unanswered(life: runs.Life) -> None:
    """Run a run whose start was answered; its outcome is stored, charged and logged."""
    try:
        life.finish()
    except runs.HardStop:
        pass  # aborted and charged for its started attempts; the worker exits after
    except Exception:  # the store went away: its books wait in runs.settle
        log.exception("a run started without waiting could not finish",
                      extra={"runId": life.run_id})


def _wants_stream(accept: str | None) -> bool:
    """Whether the request's Accept header (``accept``) asks for Server-Sent Events."""
    if not accept:  # (no Accept header matches nothing)
        return False
    # The headers clients send, answered without parsing them (best_match's answers).
    if accept in _PLAIN_ACCEPTS:
        return False
    if accept == "text/event-stream":
        return True
    return request.accept_mimetypes.best_match(
        ("application/json", "text/event-stream")) == "text/event-stream"


_PLAIN_ACCEPTS = frozenset({"application/json", "*/*"})


def _reserved(run_request, app, state, stream: bool = False) -> runs.Life:
    """The run's life with its cost reserved; its refusals as error answers (``app``, and
    ``state``: the request's ``g``)."""
    life = runs.Life(app.extensions["store"], _run_settings(app), run_request,
                     state.token.id, state.request_id, state.received, stream=stream)
    with _Refusals():
        life.reserve()
    return life


class _Refusals:
    """The refusals of a run's life as error answers (SPEC §6), around its steps: ``with
    _Refusals():``. (A class: its ``__enter__`` and ``__exit__`` cost a run less than
    ``@contextmanager``'s generator.)"""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> bool:
        if kind is None:
            return False
        if isinstance(error, runs.DuplicateRun):
            raise ApiError(400, DUPLICATE_RUN_ID, "runId already used", errors={
                "runId": [f"A run named {error.run_id!r} exists already."]}) from None
        if isinstance(error, runs.TokenDisabled):
            raise ApiError(403) from None
        if isinstance(error, runs.InsufficientBalance):
            raise ApiError(402, balance=error.balance, required=error.required) from None
        if isinstance(error, runs.TooManyRuns):
            raise ApiError(429, headers={"Retry-After": "1"}) from None
        if isinstance(error, runs.HardStop):
            # gunicorn's hard timeout: answer in our envelope; the worker exits after.
            raise ApiError(503, **_hard_stop(error)) from None
        return False


def _hard_stop(stop: runs.HardStop) -> dict:
    return {"message": "The run was stopped before it finished (the server's hard time "
            "limit)", "runId": stop.run_id}


def _event_stream(batches: sse.Batches, app=None, request_id: str | None = None):
    """A stream of ``batches`` (the first taken now, so what it does before its first
    event — the run's set-up — is done before the answer starts). What would have been
    a 503 once the stream has begun is its last event, ``error``, with the same body.
    (``app`` and ``request_id``: the request's, when the caller has them at hand.)"""
    if app is None:
        app, request_id = current_app._get_current_object(), g.request_id
    first = next(batches, [])

    def chunks():
        try:
            yield first
            yield from batches
        except runs.HardStop as stop:
            yield [("error", dumps({"code": 503000, **_hard_stop(stop),
                                    "requestId": request_id}))]
        except StoreUnavailable as error:  # (a run's books wait for it: runs.settle)
            log.error("store unavailable: %s", error)
            yield [("error", dumps({"code": 503000, "message": STORE_UNAVAILABLE,
                                    "requestId": request_id}))]
        finally:
            batches.close()

    keep_alive_s = app.config["STREAM_KEEPALIVE_MS"] / 1000
    stream = sse.paced(sse.encode(chunks(), keep_alive_s),
                       request.environ.get("gunicorn.socket"))
    # Its body handed to the server as it is (``direct_passthrough``: Werkzeug would wrap
    # it in two more iterators, to encode text and to close the answer, which closing
    # the stream does), its headers made from those Werkzeug checked once.
    headers = Headers()
    headers._list = list(_STREAM_HEADERS)
    return app.response_class(stream, headers=headers, direct_passthrough=True)


# A stream's headers (SPEC §12), as Werkzeug makes them for ``sse.HEADERS`` and the type.
_STREAM_HEADERS = tuple(Response(mimetype="text/event-stream", headers=sse.HEADERS).headers
                        .to_wsgi_list())


def _run_settings(app) -> dict:
    """The settings a run and its node handlers read (``ctx.settings``): every RUNNER_
    setting, taken from the app's config once."""
    settings = app.extensions.get("run_settings")
    if settings is None:
        config = app.config
        settings = app.extensions["run_settings"] = {
            name: config[name] for name in config_module.SETTINGS}
    return settings


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    """A stored run, only to the token that made it: its stored text, never parsed again;
    a run in flight's partial state (SPEC §12)."""
    text = _store().run_text(run_id, g.token.id)
    if text is None:
        raise ApiError(404, message=f"No run named {run_id!r}")
    return current_app.response_class(text, mimetype="application/json")


@bp.get("/runs/<run_id>/graph")
def run_graph(run_id: str):
    """What the run viewer draws a run on (SPEC §14): its definition's shape (each node's
    type, level, children, branch, loop body, loop), when it started, its deadline."""
    text = _store().run_graph(run_id, g.token.id)
    if text is None:
        raise ApiError(404, message=f"No run named {run_id!r}")
    if text == "null":  # a run stored before graphs were
        text = dumps({"runId": run_id, "startedAt": None, "deadlineMs": None, "nodes": None})
    return current_app.response_class(text, mimetype="application/json")


@bp.get("/runs/<run_id>/stream")
def follow_run(run_id: str):
    """Any of the caller's runs as events: what happened so far, then the rest (SPEC §12);
    at most MAX_FOLLOWERS such streams per token at once, and, as each holds a worker,
    within MAX_CONCURRENT_RUNS together with its runs (SPEC §8)."""
    store, token_id, config = _store(), g.token.id, current_app.config
    if store.follow(run_id, token_id, 2 ** 62) is None:
        raise ApiError(404, message=f"No run named {run_id!r}")
    # A follower lasts at most as long as a run may: it ends before gunicorn's limit.
    lasts = config_module.run_deadline_s(config) + config_module.HARD_TIMEOUT_PAST_DEADLINE_S / 2
    follower = store.start_following(token_id, config["MAX_FOLLOWERS"], lasts + 5,
                                     config["MAX_CONCURRENT_RUNS"])
    if follower is None:
        raise ApiError(429, message=(
            f"This token has {config['MAX_FOLLOWERS']} streams open (RUNNER_MAX_FOLLOWERS), "
            f"or {config['MAX_CONCURRENT_RUNS']} runs and streams in flight "
            "(RUNNER_MAX_CONCURRENT_RUNS), already"), headers={"Retry-After": "1"})

    wait = sse.waiter(request.environ.get("gunicorn.socket"))  # (no request once streaming)

    def batches():
        try:
            yield from follow.events(store, run_id, token_id, wait, time.monotonic() + lasts)
        finally:
            with contextlib.suppress(StoreUnavailable):
                store.stop_following(follower)

    return _event_stream(batches())


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str):
    """Stop a run in flight from any worker (SPEC §12): 200 with its final state once it
    has stopped (within ``CANCEL_WAIT_S``), else 202; 404 for no such run, 409 when it
    had finished."""
    store, token_id = _store(), g.token.id
    status = store.request_cancel(run_id, token_id)
    if status is None:
        raise ApiError(404, message=f"No run named {run_id!r}")
    if status != "running":
        raise ApiError(409, message=f"The run has finished already (status {status!r}).",
                       runId=run_id, status=status)
    until = time.monotonic() + CANCEL_WAIT_S
    seen = -1
    while time.monotonic() < until:
        found = store.follow(run_id, token_id, seen)
        if found is None:
            break
        seen, text = found
        if text is not None and not text.startswith(_running_head(run_id)):
            return current_app.response_class(text, mimetype="application/json")
        time.sleep(0.05)
    return current_app.response_class(
        dumps({"runId": run_id, "status": "running", "cancelRequested": True}), status=202,
        mimetype="application/json")


def _running_head(run_id: str) -> str:
    """How the stored text of a run in flight begins (``state.summary``'s order)."""
    return dumps({"runId": run_id, "status": "running"})[:-1]


@bp.get("/runs")
def list_runs():
    """The caller's runs, newest first: ``status``, ``limit`` (1..100, 20) and ``cursor``
    (the ``nextCursor`` of the page before; stable while runs are added)."""
    status, limit, before = _listing_query(request.args)
    found = _store().list_runs(g.token.id, status, limit + 1, before)
    page = found[:limit]
    return jsonify({
        "runs": [{"runId": run.run_id, "status": run.status, "createdAt": iso(run.created_at),
                  "durationMs": run.duration_ms, "totalCu": run.total_cu} for run in page],
        "nextCursor": _cursor(page[-1].row) if len(found) > limit else None})


def _listing_query(args) -> tuple[str | None, int, int | None]:
    """``status``, ``limit`` and ``cursor`` checked; 400 naming each that is not."""
    problems: dict[str, list[str]] = {}
    unknown = sorted(set(args) - {"status", "limit", "cursor"})
    for name in unknown:
        problems[name] = ["Unknown parameter."]
    status = args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        problems["status"] = [f"Must be one of: {', '.join(RUN_STATUSES)}."]
    limit = args.get("limit", "20")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 100):
        problems["limit"] = ["Must be a whole number from 1 to 100."]
    before = _row(args["cursor"]) if args.get("cursor") else None
    if before is None and args.get("cursor"):
        problems["cursor"] = ["Not a cursor from this list (use nextCursor as given)."]
    if problems:
        raise ApiError(400, message="Invalid query parameters", errors=problems)
    return status, int(limit), before


def _row(cursor: str) -> int | None:
    """The row a ``nextCursor`` names; None for anything else (the stores' row ids are
    positive 64-bit integers: a larger number would overflow SQLite's)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "==").decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2 ** 63):
        return None
    return int(text)


def _cursor(row: int) -> str:
    return base64.urlsafe_b64encode(str(row).encode()).decode().rstrip("=")


@bp.get("/balance")
def balance():
    """The calling token's compute units: available, held by runs in flight, spent."""
    found = _store().balance(g.token.id)
    return jsonify({"balance": found.balance, "reserved": found.reserved, "used": found.used})


def _store():
    return current_app.extensions["store"]


@bp.post("/workflows/validate")
def validate_workflow():
    """Every check of SPEC §2, nothing run, nothing charged."""
    limits = _limits()
    plan = check_request(g.body, limits, validate_only=True).plan
    return jsonify({"valid": True, "nodeCount": len(plan.nodes), "levels": plan.levels,
                    "loops": plan.loops, "warnings": unknown_keys(plan, limits.max_problems)})


@bp.get("/node-types")
def node_types():
    """Every node type with the JSON Schema of its payload."""
    return jsonify({"nodeTypes": openapi.node_types()})
