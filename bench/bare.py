"""The baseline for ``make bench-http``: a bare Flask JSON endpoint, nothing else."""
from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/v1/runs/sync")
def echo():
    """Parse the JSON body and answer a small JSON object, as cheaply as Flask allows."""
    body = request.get_json()
    return jsonify({"ok": True, "nodes": len(body["definition"]["nodes"])})
