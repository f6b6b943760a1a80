"""The pages for people (SPEC §14): one run, the runs list, the playground.

Each page is an HTML shell with no data in it. Its script (an ES module in
app/static/js/) asks for the API token once, keeps it in the browser's session
storage and calls the ``/v1`` API with it as the Bearer header; so the pages load
without a token, and no token or run data is ever written into their HTML. A strict
Content-Security-Policy lets them run only the service's own scripts and styles,
and talk only to the service: they work offline. The libraries they use come from
the npm registry, bundled into app/static/vendor (frontend/ says how).
"""
from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__, static_folder="static", static_url_path="/static",
               template_folder="templates")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'"))

# The playground's menu: examples of docs/, copied verbatim into app/static/examples
# (tests/test_pages.py keeps them equal to the pages they come from).
EXAMPLES = {
    "greeting": "A greeting (workflows.md)",
    "branches": "Branches: if, then/else and a join (workflows.md)",
    "failures": "A failure and what it skips (workflows.md)",
    "retries": "Retries: three attempts (workflows.md)",
    "secrets": "Secrets, redacted (workflows.md)",
    "failed-items": "A loop that keeps going past failed items (loops.md)",
    "nested-loops": "Nested loops (loops.md)",
}


@bp.after_request
def protect(response):
    """Every page and file here: only this service's scripts, styles and API."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/runs/<run_id>")
def run_page(run_id: str):
    """One run: its graph, timeline and nodes; followed live while it runs."""
    return render_template("run.html")


@bp.get("/runs")
def runs_page():
    """The caller's runs, newest first."""
    return render_template("runs.html")


@bp.get("/playground")
def playground():
    """Edit a request, validate it, run it and land on its page."""
    return render_template("playground.html", examples=EXAMPLES)
