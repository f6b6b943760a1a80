"""The application factory."""
from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Request, Response, g, request
from flask.ctx import RequestContext, _AppCtxGlobals
from flask.globals import request_ctx
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface
from werkzeug.routing import MapAdapter
from werkzeug.wsgi import get_host

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
    # One hook each way: the request id, then a CORS preflight's answer (which carries
    # it); the answer finished, then a refusal noted (errors.note_refusal).
    app.before_request(_begin)
    app.after_request(_finish_response)
    cors.register(app)
    app.register_blueprint(api.bp, url_prefix="/v1")
    # B3OS's own clients: the same routes, 2xx bodies in B3OS's envelope (SPEC §7).
    app.register_blueprint(api.bp, url_prefix="/b3os/v1", name="b3os")
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(pages.bp)  # /runs, /runs/<runId>, /playground (SPEC §14)
    cli.register(app)
    return app


class _Once:
    """A property of Flask's request worked out at its first use, then kept in the
    request's own dict, where later uses find it without a call: for those that depend
    only on the route matched, which Flask sets before any hook or view runs."""

    def __init__(self, prop: property):
        self._get = prop.fget

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, req, owner=None):
        if req is None:
            return self
        value = req.__dict__[self._name] = self._get(req)
        return value


class _Request(Request):
    """Flask's request, its blueprints (read before each hook list of every request,
    and by the finishing hook) worked out once."""

    blueprint = _Once(Request.blueprint)
    blueprints = _Once(Request.blueprints)

    def close(self) -> None:
        """Werkzeug's, which closes the files of a form it parsed: none when it parsed no
        form (the API reads JSON)."""
        if "files" in self.__dict__:
            super().close()


class _Response(Response):
    """Flask's response, without Werkzeug's last steps where they would change nothing."""

    def get_wsgi_headers(self, environ):
        """The headers themselves, not a copy fixed for the environ, when there is nothing
        to fix: a status with a body, its Content-Length set (or a streamed body, whose
        length Werkzeug never sets), no Location or Content-Location to make a URL of."""
        status = self.status_code
        if status < 200 or status == 204 or status == 304:
            return super().get_wsgi_headers(environ)
        length = False
        for name, _value in self.headers:
            name = name.lower()
            if name == "content-length":
                length = True
            elif name == "location" or name == "content-location":
                return super().get_wsgi_headers(environ)
        return self.headers if length or not self.is_sequence else \
            super().get_wsgi_headers(environ)

    def get_app_iter(self, environ):
        """The body's list of bytes itself, rather than a generator over it in an iterator
        that closes the response, when closing it has nothing to do."""
        body, status = self.response, self.status_code
        if (type(body) is list and len(body) == 1 and type(body[0]) is bytes
                and not self._on_close and status >= 200 and status != 204 and status != 304
                and environ["REQUEST_METHOD"] != "HEAD"):
            return body
        return super().get_app_iter(environ)


class _Sessions(SecureCookieSessionInterface):
    """Flask's sessions; without a secret key (the API has no sessions) one empty session
    that refuses writes, shared by every request, rather than one made for each."""

    def open_session(self, app: Flask, request: Request):
        """Flask's, which finds no session without a secret key: the null one at once."""
        if not app.secret_key:
            return self.make_null_session(app)
        return super().open_session(app, request)

    def make_null_session(self, app: Flask):
        null = app.extensions.get("null_session")
        if null is None:
            null = app.extensions["null_session"] = super().make_null_session(app)
        return null


class _RequestContext(RequestContext):
    """Flask's request context, with the route of a path without arguments remembered
    once Werkzeug has matched it: the same path, method, scheme and subdomain always
    match the same rule (the app's routes are fixed once it has served a request)."""

    def match_request(self) -> None:
        adapter, request = self.url_adapter, self.request
        key = (adapter.path_info, adapter.default_method, adapter.url_scheme,
               adapter.subdomain)
        routes = self.app.extensions["routes"]
        rule = routes.get(key)
        if rule is not None:
            request.url_rule, request.view_args = rule, {}
            return
        super().match_request()
        rule = request.url_rule
        # Only rules without arguments: a run's own paths (/v1/runs/<id>) are endless.
        if (rule is not None and not rule.arguments and not request.view_args
                and len(routes) < 256):
            routes[key] = rule


class _Globals(_AppCtxGlobals):
    """Flask's ``g``, its attributes set as any object's: Flask's ``__setattr__`` (there
    for type checkers) does the same in a Python call."""

    __setattr__ = object.__setattr__


class _Synced(dict):
    """Flask's ``ensure_sync`` answers by function, each worked out at its first use."""

    __slots__ = ("_app",)

    def __init__(self, app: Flask):
        super().__init__()
        self._app = app

    def __missing__(self, func: Callable) -> Callable:
        synced = Flask.ensure_sync(self._app, func)
        if len(self) < 1024:  # (hooks, views and handlers: a few dozen)
            self[func] = synced
        return synced


class _Flask(Flask):
    """Flask, with ``ensure_sync``'s answer kept per function: Flask asks for it before
    each hook and view of every request, and it never changes; and its URL adapter made
    with the request's host found once."""

    app_ctx_globals_class = _Globals
    request_class = _Request
    response_class = _Response
    session_interface = _Sessions()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # ensure_sync's answers looked up by a dict's own __getitem__: no Python call for
        # a function seen before (every hook, view and handler is a hashable function).
        self.ensure_sync = _Synced(self).__getitem__
        self._hosts: dict[tuple[str, str], tuple[str, str]] = {}
        self.extensions["routes"] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        """Flask's, the request id cleared once the answer is closed, after the work that
        follows it (a stream's events, a run started without waiting): a line logged
        between two requests (gunicorn's "Worker exiting") carries no request's id. A
        body of bytes (a list) is answered as a list that does so, iterated in C."""
        answer = self.wsgi_app(environ, start_response)
        return _ForgettingList(answer) if type(answer) is list else _Forgetting(answer)

    def request_context(self, environ: dict) -> RequestContext:
        """Flask's request context, its routes remembered (``_RequestContext``)."""
        return _RequestContext(self, environ)

    def create_url_adapter(self, request):
        """Flask's adapter, for a request as this app serves them (no SERVER_NAME,
        TRUSTED_HOSTS, host or subdomain matching, WebSocket upgrade), with the request's
        host as Werkzeug checks it and its IDNA form remembered by Host header: Flask
        checks it, then Werkzeug's ``bind_to_environ`` again, on every request."""
        config = self.config
        if request is None:  # (an app context's: none without a SERVER_NAME)
            return None if config["SERVER_NAME"] is None else super().create_url_adapter(None)
        environ = request.environ
        given = environ.get("HTTP_HOST")
        if (given is None or config["SERVER_NAME"] is not None
                or config["TRUSTED_HOSTS"] is not None or request.trusted_hosts is not None
                or self.url_map.host_matching or self.subdomain_matching
                or "HTTP_UPGRADE" in environ):
            return super().create_url_adapter(request)
        scheme, method = environ["wsgi.url_scheme"], environ["REQUEST_METHOD"]
        subdomain = self.url_map.default_subdomain or ""
        script_name, path_info, query = (
            _wsgi_text(environ.get("SCRIPT_NAME")), _wsgi_text(environ.get("PATH_INFO")),
            _wsgi_text(environ.get("QUERY_STRING")))
        hosts = self._hosts
        known = hosts.get((scheme, given))
        if known is None:  # Werkzeug's checks: the host's characters; lower case, IDNA
            request.host = host = get_host(environ)
            adapter = self.url_map.bind(host, script_name, subdomain, scheme, method,
                                        path_info, query)  # (or BadHost)
            if len(hosts) >= 256:  # (any client may send any Host)
                hosts.clear()
            hosts[scheme, given] = host, adapter.server_name
            return adapter
        request.__dict__["host"] = known[0]  # (as Werkzeug's cached_property sets it)
        return MapAdapter(self.url_map, known[1], script_name or "/", subdomain, scheme,
                          path_info or "/", method, query)


def _wsgi_text(value: str | None) -> str | None:
    """A WSGI string as text (Werkzeug's ``_wsgi_decoding_dance``): its bytes, read as
    UTF-8."""
    if value is None or value.isascii():
        return value
    return value.encode("latin1").decode(errors="replace")


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


class _ForgettingList(list):
    """A body of bytes whose ``close`` clears the request id."""

    __slots__ = ()

    def close(self) -> None:
        logconfig.request_id.set(None)


class _Forgetting:
    """An answer whose ``close`` closes it, then clears the request id: Werkzeug's
    ``ClosingIterator`` with that one callback, lighter to make."""

    __slots__ = ("_answer",)

    def __init__(self, answer):
        self._answer = answer

    def __iter__(self):
        return iter(self._answer)

    def close(self) -> None:
        close = getattr(self._answer, "close", None)
        if close is not None:
            close()
        logconfig.request_id.set(None)


def _begin():
    """The request's id (``X-Request-ID`` as given, else a new one), then a CORS
    preflight's answer (``cors.preflight``, which carries the id)."""
    req, state = request._get_current_object(), g._get_current_object()
    given = req.environ.get("HTTP_X_REQUEST_ID")  # (none matches no pattern: not tried)
    state.request_id = request_id = (
        given if given and REQUEST_ID.match(given) else _new_request_id())
    logconfig.request_id.set(request_id)
    return cors.preflight(req)


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


def _compress(response, req, seen: dict[str, str], minimum: int):
    """A JSON answer of at least ``minimum`` bytes, gzipped for a client that accepts
    it. Never a stream (Server-Sent Events go out event by event). ``seen``: the
    answer's headers, each name's first value by its lower-case name."""
    # (A body held as a list is no stream: is_streamed's answer, without its call.)
    if (not minimum or response.direct_passthrough
            or (type(response.response) is not list and response.is_streamed)):
        return response
    length, kind = seen.get("content-length"), seen.get("content-type")
    if (not length or not length.isdigit() or int(length) < minimum or not kind
            or (kind != "application/json" and kind.split(";")[0].strip() != "application/json")
            or "content-encoding" in seen):
        return response
    # Most answers have no Vary yet (CORS off): added directly, not parsed and written back.
    if "vary" in seen:
        response.vary.add("Accept-Encoding")
    else:  # (Headers.add, without its check of a value known to hold no newline)
        response.headers._list.append(("Vary", "Accept-Encoding"))
    # No Accept-Encoding accepts no gzip: its header is parsed only when there is one.
    if req.environ.get("HTTP_ACCEPT_ENCODING") and req.accept_encodings["gzip"] > 0:
        response.set_data(gzip.compress(response.get_data(), GZIP_LEVEL, mtime=0))
        response.headers["Content-Encoding"] = "gzip"
    return response


def _finish_response(response):
    """Echo the request id; wrap a 2xx JSON body of a /b3os route as ``{code: 0, message,
    data, requestId}``; then gzip it (``_compress``); then note a refusal
    (``errors.note_refusal``)."""
    request_id = getattr(g._get_current_object(), "request_id", None)
    context = request_ctx._get_current_object()
    req, app, status = context.request, context.app, response.status_code
    if (req.blueprint == "b3os" and 200 <= status < 300
            and response.is_json and not response.is_streamed):
        # Spliced as text: a body of up to 32 MiB is neither parsed nor written again.
        data = response.get_data()
        response.set_data(b"".join((
            b'{"code":0,"message":"success","data":', data, b',"requestId":',
            app.json.dumps(request_id).encode(), b"}")))
    # The headers read once here (each lookup by name reads them all, case-insensitively).
    headers, seen = response.headers, {}
    for name, value in headers:
        seen.setdefault(name.lower(), value)
    if "x-request-id" in seen:
        headers["X-Request-ID"] = request_id or ""
    else:
        headers.add("X-Request-ID", request_id or "")
    response = _compress(response, req, seen, app.config["GZIP_MIN_BYTES"])
    if status in errors.REFUSED:  # (its status, which nothing above changes)
        errors.note_refusal(response)
    return response
