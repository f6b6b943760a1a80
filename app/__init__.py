"""The application factory."""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, request

from . import api, cli, config, errors, logconfig
from .store import Store

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """config → logging → store → error handlers → blueprints."""
    app = Flask(__name__)
    app.config.update(config.load(test_config))
    app.json.sort_keys = False  # executionState keeps its topological order
    app.json.compact = True
    logconfig.configure(app.config)

    store = Store(app.config["STORE_PATH"])
    store.migrate()
    app.extensions["store"] = store

    errors.register(app)
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.register_blueprint(api.bp, url_prefix="/v1")
    cli.register(app)
    return app


def _assign_request_id() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
    logconfig.request_id.set(g.request_id)


def _echo_request_id(response):
    response.headers["X-Request-ID"] = g.get("request_id") or ""
    return response
