"""Probes for the process manager and the load balancer; no token needed."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics, runs
from .errors import error_response
from .version import __version__

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez():
    """The process answers: nothing else is checked. With the version it runs."""
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/metrics")
def prometheus():
    """Prometheus text format; restrict this route at the proxy."""
    # content_type, not mimetype: Flask would append a second "; charset=utf-8".
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/readyz")
def readyz():
    """Ready for traffic: the store can be written. Books left unwritten while the store
    was away are written here too (``runs.settle``). A host that is stopping answers
    nothing: its port refuses connections from the TERM on (gunicorn.conf.py)."""
    try:
        current_app.extensions["store"].check_writable()
    except Exception as error:  # any store failure means: send traffic elsewhere
        current_app.logger.warning("readiness check failed: %s", error)
        return error_response(503, 503000, "Store not writable")
    runs.settle()
    return jsonify({"status": "ok"})
