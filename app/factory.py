"""The application factory."""
from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.wsgi import ClosingIterator

from . import api, cli, config, cors, errors, health, logconfig, openapi, pages
from .store import StoreUnavailable, open_store

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """config → logging → store → error handlers → blueprints."""
    app = _Flask(__name__, static_folder=None)  # the pages' blueprint serves /static
    # `//v1/runs/sync` is no route (404 JSON), rather than Werkzeug's 308 with an HTML body.
    app.url_map.merge_slashes = False
    app.config.update(config.load(test_config))
    app.json = _JSONProvider(app)
    command = cli.building_for_a_command()
    logconfig.configure(app.config, command=command)
    if command:  # (the server says so in gunicorn's master, once)
        cli.warn_unknown_variables()

    store = open_store(config.database_url(app.config), app.config["STORE_BUSY_MS"],
                       app.config["HOST_ID"], app.config["SQLITE_SYNCHRONOUS"])
    if not command:  # a command's store is checked and migrated by the command (cli.py)
        try:
            store.migrate()
        except StoreUnavailable as error:  # serve 503s (and /readyz says so) until it is back
            logging.getLogger("app").error("store unavailable at start-up: %s", error)
    app.extensions["store"] = store

    errors.register(app)
    app.before_request(_assign_request_id)
    app.after_request(_finish_response)
    cors.register(app)  # after the request id: a preflight's answer carries it too
    app.register_blueprint(api.bp, url_prefix="/v1")
    # B3OS's own clients: the same routes, 2xx bodies in B3OS's envelope (SPEC §7).
    app.register_blueprint(api.bp, url_prefix="/b3os/v1", name="b3os")
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(pages.bp)  # /runs, /runs/<runId>, /playground (SPEC §14)
    cli.register(app)
    app.wsgi_app = _forgetting_the_request_id(app.wsgi_app)
    return app


class _Flask(Flask):
    """Flask, with ``ensure_sync``'s answer kept per function: Flask asks for it before
    each hook and view of every request, and it never changes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._synced: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        try:
            return self._synced[func]
        except KeyError:
            synced = super().ensure_sync(func)
            if len(self._synced) < 1024:  # (hooks and views: a few dozen)
                self._synced[func] = synced
            return synced
        except TypeError:  # not hashable
            return super().ensure_sync(func)


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with keys kept in their order (executionState's is topological),
    compact, and without jsonify's newline after the text: every JSON answer ends at its
    closing bracket, as a stored run — served as it is stored — and a stream's
    ``run.finished`` data do."""

    sort_keys = False

    def response(self, *args: Any, **kwargs: Any):
        value = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.dumps(value, separators=(",", ":")),
                                        mimetype=self.mimetype)


def _forgetting_the_request_id(wsgi_app):
    """The request id is cleared once the answer is closed, after the work that follows
    it (a stream's events, a run started without waiting): a line logged between two
    requests (gunicorn's "Worker exiting") carries no request's id."""
    def wsgi(environ, start_response):
        return ClosingIterator(wsgi_app(environ, start_response),
                               lambda: logconfig.request_id.set(None))
    return wsgi


def _assign_request_id() -> None:
    given = request.environ.get("HTTP_X_REQUEST_ID", "")
    g.request_id = request_id = given if REQUEST_ID.match(given) else _new_request_id()
    logconfig.request_id.set(request_id)


def _new_request_id() -> str:
    """A random UUID (version 4) in 32 hex digits, as ``uuid.uuid4().hex`` writes it,
    without building a ``UUID`` on every request."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


# zlib's fastest level: JSON shrinks almost as much as at the default level (6), for a
# fraction of a worker's CPU (bench/gzip.py).
GZIP_LEVEL = 1


def _compress(response, req):
    """A JSON answer of at least ``GZIP_MIN_BYTES``, gzipped for a client that accepts
    it. Never a stream (Server-Sent Events go out event by event)."""
    minimum = current_app.config["GZIP_MIN_BYTES"]
    length = response.content_length
    if (not minimum or length is None or length < minimum or response.is_streamed
            or response.direct_passthrough or response.mimetype != "application/json"
            or "Content-Encoding" in response.headers):
        return response
    # Most answers have no Vary yet (CORS off): written directly, not parsed and written back.
    if "Vary" in response.headers:
        response.vary.add("Accept-Encoding")
    else:
        response.headers["Vary"] = "Accept-Encoding"
    # No Accept-Encoding accepts no gzip: its header is parsed only when there is one.
    if req.environ.get("HTTP_ACCEPT_ENCODING") and req.accept_encodings["gzip"] > 0:
        response.set_data(gzip.compress(response.get_data(), GZIP_LEVEL, mtime=0))
        response.headers["Content-Encoding"] = "gzip"
    return response


def _finish_response(response):
    """Echo the request id; wrap a 2xx JSON body of a /b3os route as ``{code: 0, message,
    data, requestId}``; then gzip it (``_compress``)."""
    request_id = g.get("request_id")
    response.headers["X-Request-ID"] = request_id or ""
    req = request._get_current_object()
    if (req.blueprint == "b3os" and 200 <= response.status_code < 300
            and response.is_json and not response.is_streamed):
        # Spliced as text: a body of up to 32 MiB is neither parsed nor written again.
        data = response.get_data()
        response.set_data(b"".join((
            b'{"code":0,"message":"success","data":', data, b',"requestId":',
            current_app.json.dumps(request_id).encode(), b"}")))
    return _compress(response, req)
