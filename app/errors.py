"""One error envelope (SPEC §6) and the app-level handlers that produce it."""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import metrics
from .store import StoreUnavailable

log = logging.getLogger("app.errors")

# HTTP status → (our code, default message)
HTTP_CODES = {
    400: (400000, "Malformed request body"),
    401: (401000, "Missing or unknown API token"),
    402: (402000, "Compute-unit balance too low"),
    403: (403000, "API token is disabled"),
    404: (404000, "Not found"),
    405: (405000, "Method not allowed"),
    409: (409000, "Conflicts with the state of the resource"),
    413: (413000, "Request body too large"),
    415: (415000, "Content type must be application/json"),
    429: (429000, "Too many concurrent runs for this token"),
    500: (500000, "Internal server error"),
    503: (503000, "Service unavailable"),
}

STORE_UNAVAILABLE = "The store is unavailable; try again shortly"

# Refusals of a request as sent (not of the service's state): one log line and a count each.
REFUSED = frozenset({400, 401, 402, 403, 413, 415, 429})


class ApiError(Exception):
    """An error response: HTTP status, our code, message and extra body fields."""

    def __init__(self, status: int, /, code: int | None = None, message: str | None = None,
                 headers: dict | None = None, **extra):
        # (status positional only: a body field may be named "status" too, as in 409000)
        default_code, default_message = HTTP_CODES[status]
        super().__init__(message or default_message)
        self.status = status
        self.code = code or default_code
        self.message = message or default_message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, /, code: int, message: str, headers: dict | None = None,
                   **extra):
    """The JSON envelope every error uses; ``extra``: more fields (one may be ``status``)."""
    g.error_code = code  # for the refusal's log line
    body = {"code": code, "message": message, "requestId": g.get("request_id")}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def note_refusal(response):
    """One line and a count (``runner_requests_refused_total``) per refused request: its
    status, our code, and its token's name once the token is known."""
    status = response.status_code
    if status in REFUSED:
        metrics.count(metrics.REFUSED, str(status))
        log.info("request refused", extra={
            "status": status, "code": g.get("error_code", status * 1000),
            "tokenName": g.get("token_name"), "method": request.method,
            "path": request.path})
    return response


def register(app: Flask) -> None:
    """JSON handlers for our errors, Werkzeug's (404/405/413/…) and anything else (the
    app's finishing hook notes each refusal: ``note_refusal``)."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.headers,
                              **error.extra)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(error: StoreUnavailable):
        log.error("store unavailable: %s", error)
        return error_response(503, 503000, STORE_UNAVAILABLE, {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status = error.code or 500
        code, message = HTTP_CODES.get(status, (status * 1000, error.name))
        headers = {}
        if status == 405 and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, 500000, HTTP_CODES[500][1])
