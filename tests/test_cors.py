"""CORS: off by default; RUNNER_CORS_ORIGINS lets pages of the listed origins call the
API from a browser; a preflight needs no token."""
from __future__ import annotations

import pytest

from app import create_app
from tests.helpers import DEV_AUTH, definition
from tests.server import Server, raw_exchange

APP = "https://app.example.com"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}
RUN = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"}})}


@pytest.fixture
def cors_client(tmp_path):
    app = create_app({"TESTING": True, "STORE_PATH": str(tmp_path / "runner.sqlite3"),
                      "LOG_FILE": "", "CORS_ORIGINS": [APP, "http://localhost:3000"]})
    app.extensions["store"].ensure_token("dev", DEV_AUTH["Authorization"].split()[1], 1000)
    return app.test_client()


def test_off_by_default(client):
    answer = client.get("/v1/balance", headers={**DEV_AUTH, "Origin": APP})
    assert answer.status_code == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Origin" not in answer.headers.get("Vary", "")
    preflight = client.options("/v1/runs/sync", headers=PREFLIGHT)
    assert preflight.status_code == 204 and preflight.get_data() == b""
    assert not any(name.startswith("Access-Control-") for name, _ in preflight.headers)


@pytest.mark.parametrize("path", ["/v1/runs/sync", "/b3os/v1/runs/sync", "/v1/runs/x/cancel"])
def test_a_preflight_needs_no_token_and_answers_what_may_follow(cors_client, path):
    answer = cors_client.options(path, headers=PREFLIGHT)
    assert answer.status_code == 204 and answer.get_data() == b""
    headers = answer.headers
    assert headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "Origin" in headers["Vary"] and "POST" in headers["Allow"]
    assert int(headers["Access-Control-Max-Age"]) > 0


def test_answers_carry_the_allowed_origin_and_expose_the_request_id(cors_client):
    for answer in (cors_client.post("/v1/runs/sync", json=RUN, headers={**DEV_AUTH, "Origin": APP}),
                   cors_client.get("/b3os/v1/balance", headers={**DEV_AUTH, "Origin": APP}),
                   cors_client.get("/v1/balance", headers={"Origin": APP})):  # 401: readable too
        assert answer.headers["Access-Control-Allow-Origin"] == APP
        exposed = answer.headers["Access-Control-Expose-Headers"]
        assert "X-Request-ID" in exposed and "Retry-After" in exposed
        assert "Origin" in answer.headers["Vary"]
    big = {"definition": RUN["definition"], "payload": {"items": list(range(1000))}}
    answer = cors_client.post("/v1/runs/sync", json=big, headers={**DEV_AUTH, "Origin": APP})
    assert answer.headers["Vary"] == "Origin, Accept-Encoding"  # gzip's adds to CORS's
    local = cors_client.get("/v1/balance", headers={**DEV_AUTH, "Origin": "http://localhost:3000"})
    assert local.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_other_origins_and_other_routes_get_no_cors_headers(cors_client):
    for origin in ("https://evil.example", "https://app.example.com.evil.example", "null"):
        answer = cors_client.get("/v1/balance", headers={**DEV_AUTH, "Origin": origin})
        assert answer.status_code == 200
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert "Origin" in answer.headers["Vary"]  # the answer depends on it
        preflight = cors_client.options("/v1/runs/sync", headers={**PREFLIGHT, "Origin": origin})
        assert preflight.status_code == 204
        assert "Access-Control-Allow-Origin" not in preflight.headers
    page = cors_client.get("/livez", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in page.headers
    assert cors_client.options("/v1/nothing", headers=PREFLIGHT).status_code == 404
    # A preflight is not a request: an OPTIONS never runs the route.
    assert cors_client.options("/v1/runs/sync", headers=PREFLIGHT).headers.get(
        "Content-Type") is None


@pytest.mark.server
def test_cors_on_gunicorn(tmp_path):
    server = Server(tmp_path, workers=1, CORS_ORIGINS=f"{APP}/, http://localhost:3000")
    server.flask("token", "seed-dev")
    server.start()
    try:
        status, headers, body = raw_exchange(server.port, (
            "OPTIONS /v1/runs/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Origin: {APP}\r\nAccess-Control-Request-Method: POST\r\n"
            "Access-Control-Request-Headers: authorization,content-type\r\n\r\n").encode())
        assert status == 204 and body == b""
        assert headers["Access-Control-Allow-Origin"] == APP
        code, answer = server.request("POST", "/v1/runs/sync", RUN, headers={"Origin": APP})
        status, headers, _ = raw_exchange(server.port, (
            "GET /v1/balance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Origin: {APP}\r\nAuthorization: Bearer dev-token\r\n\r\n").encode())
    finally:
        server.stop()
    assert code == 200 and answer["status"] == "success"
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-ID" in headers["Access-Control-Expose-Headers"]
