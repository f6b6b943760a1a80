"""Probes and the B3OS mount (SPEC §7)."""
from __future__ import annotations

import os

from app import __version__
from tests.helpers import DEV_AUTH, definition

TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
    "payload": {"message": "hello"}}


def test_livez_and_readyz_need_no_token(client):
    assert client.get("/livez").json == {"status": "ok", "version": __version__}
    assert client.get("/readyz").json == {"status": "ok"}


def test_readyz_fails_when_the_store_cannot_be_written(app, client, tmp_path):
    if os.geteuid() == 0:
        # root writes read-only files: make the store unusable another way
        app.extensions["store"].path = str(tmp_path / "missing-dir" / "x" / "store.sqlite3")
        app.extensions["store"].close()
        (tmp_path / "missing-dir").write_text("a file where a directory should be")
    else:
        for path in tmp_path.glob("runner.sqlite3*"):
            path.chmod(0o444)
        app.extensions["store"].close()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["code"] == 503000


def test_b3os_clients_read_the_envelope(client):
    response = client.post("/b3os/v1/runs/sync", json=TWO_NODES, headers=DEV_AUTH)
    assert response.status_code == 200
    body = response.json
    assert body["code"] == 0 and body["message"] == "success"
    assert body["requestId"] == response.headers["X-Request-ID"]
    data = body["data"]
    assert data["status"] == "success" and list(data["executionState"]) == ["root", "greet"]
    stored = client.get(f"/b3os/v1/runs/{data['runId']}", headers=DEV_AUTH).json
    assert stored["code"] == 0 and stored["data"] == data


def test_b3os_error_bodies_are_unchanged(client):
    response = client.post("/b3os/v1/runs/sync", json={"definition": {}}, headers=DEV_AUTH)
    assert response.status_code == 400
    assert response.json["code"] == 400228 and "data" not in response.json
    assert client.get("/b3os/v1/runs/nope", headers=DEV_AUTH).json["code"] == 404000
    assert client.post("/b3os/v1/workflows/validate", json=TWO_NODES,
                       headers=DEV_AUTH).json["data"]["valid"] is True


def test_metrics_need_no_token_and_count_runs(client):
    from prometheus_client import REGISTRY

    def runs(status):
        return REGISTRY.get_sample_value("runner_runs_total", {"status": status}) or 0

    before = runs("success")
    client.post("/v1/runs/sync", json=TWO_NODES, headers=DEV_AUTH)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.headers["Content-Type"].count("charset") == 1
    assert "runner_runs_total" in response.get_data(as_text=True)
    assert runs("success") == before + 1
