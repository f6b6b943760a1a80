"""Calls to the API from pages of other origins (CORS): off unless ``RUNNER_CORS_ORIGINS``
lists the origins allowed.

On the API (``/v1/…`` and ``/b3os/v1/…``), a request from a listed origin gets
``Access-Control-Allow-Origin`` (its origin, echoed) and may read ``X-Request-ID`` and
the other headers a client needs; a preflight — ``OPTIONS`` — is answered 204 before any
other check (no token: a browser never sends one with it), allowing the API's methods and
the ``Authorization`` and ``Content-Type`` headers. While CORS is on, every API answer
says ``Vary: Origin``, so that a cache never hands one origin's answer to another. An
origin not listed gets no CORS header: the browser keeps the answer from its page.
"""
from __future__ import annotations

from flask import Flask, Response, current_app, request

API_PREFIXES = ("/v1/", "/b3os/v1/")
METHODS = "GET, POST"  # every method of the API's routes
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSED_HEADERS = "X-Request-ID, Location, Retry-After, WWW-Authenticate"
PREFLIGHT_MAX_AGE_S = 600


def register(app: Flask) -> None:
    """Add the CORS headers to every API answer (the app's first hook answers
    preflights: ``preflight``)."""
    origins = app.extensions["cors_origins"] = frozenset(app.config["CORS_ORIGINS"])
    if origins:  # (off: no answer has a CORS header to add)
        app.after_request(_headers)


def _on_the_api(req) -> bool:
    return req.path.startswith(API_PREFIXES)


def preflight(req) -> Response | None:
    """An ``OPTIONS`` request (``req``) to an API route: 204 and what it may do, with no
    token."""
    if req.method != "OPTIONS" or not _on_the_api(req) or req.routing_exception:
        return None  # (an unknown route stays a 404)
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]
    response.headers["Allow"] = ", ".join(sorted(request.url_rule.methods))
    if _allowed_origin() and "Access-Control-Request-Method" in request.headers:
        response.headers["Access-Control-Allow-Methods"] = METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return response


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin in current_app.extensions["cors_origins"] else None


def _headers(response: Response) -> Response:
    if not _on_the_api(request):
        return response
    response.vary.add("Origin")
    origin = _allowed_origin()
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response
