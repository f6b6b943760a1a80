"""The operator's commands: flask --app wsgi token … / store …"""
from __future__ import annotations

from tests.helpers import definition

ONE_CU = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"}})}


def invoke(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    return result.exit_code, result.output


def test_token_lifecycle(app, client):
    code, secret = invoke(app, "token", "create", "carol", "--balance", "5")
    secret = secret.strip()
    assert code == 0 and secret.startswith("wr_")
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.post("/v1/runs/sync", json=ONE_CU, headers=auth).status_code == 200
    code, listing = invoke(app, "token", "list")
    assert "carol" in listing and " 4  enabled" in listing
    assert secret not in listing
    assert invoke(app, "token", "top-up", "carol", "10")[1].strip() == "carol: balance 14"
    assert invoke(app, "token", "disable", "carol")[0] == 0
    assert client.post("/v1/runs/sync", json=ONE_CU, headers=auth).status_code == 403
    assert invoke(app, "token", "enable", "carol")[0] == 0
    assert client.post("/v1/runs/sync", json=ONE_CU, headers=auth).status_code == 200


def test_token_errors(app):
    invoke(app, "token", "create", "dup")
    code, out = invoke(app, "token", "create", "dup")
    assert code != 0 and "exists already" in out
    assert invoke(app, "token", "top-up", "ghost", "1")[0] != 0
    assert invoke(app, "token", "disable", "ghost")[0] != 0
    assert invoke(app, "token", "top-up", "dup", "0")[0] != 0


def test_seed_dev_tops_up_to_at_least_a_million(app, client):
    store = app.extensions["store"]
    assert invoke(app, "token", "seed-dev")[0] == 0
    assert store.token_by_name("dev-token").balance == 1_000_000
    auth = {"Authorization": "Bearer dev-token"}
    client.post("/v1/runs/sync", json=ONE_CU, headers=auth)
    assert store.token_by_name("dev-token").balance == 999_999
    invoke(app, "token", "seed-dev")
    assert store.token_by_name("dev-token").balance == 1_000_000
    store.top_up("dev-token", 5)
    invoke(app, "token", "seed-dev")
    assert store.token_by_name("dev-token").balance == 1_000_005


def test_store_backup(app, tmp_path):
    code, out = invoke(app, "store", "backup", str(tmp_path / "b.sqlite3"))
    assert "backed up" in out
    assert code == 0 and (tmp_path / "b.sqlite3").stat().st_size > 0
    assert invoke(app, "store", "prune")[1].strip() == "deleted 0 run(s)"
