"""The operator's commands: flask --app wsgi token … / store …"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import definition
from tests.server import ROOT, free_port

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


def flask(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    """``flask --app wsgi …`` in a process of its own, on the store at ``url``."""
    env = {**os.environ, "RUNNER_DATABASE_URL": url, "RUNNER_STORE_BUSY_MS": "1000",
           "RUNNER_LOG_FILE": str(tmp_path / "log" / "app.log")}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_commands_work_against_a_postgresql_store(tmp_path, pg_url):
    def ok(*args: str) -> str:
        done = flask(tmp_path, pg_url, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    secret = ok("token", "create", "dora", "--balance", "5")
    assert secret.startswith("wr_")
    assert ok("token", "top-up", "dora", "10") == "dora: balance 15"
    assert ok("token", "disable", "dora") == "dora: disabled"
    assert ok("token", "seed-dev") == "dev-token: balance 1000000"
    listing = ok("token", "list").splitlines()
    assert listing[1:] == [f"{'dev-token':<24} {1_000_000:>12}  enabled",
                           f"{'dora':<24} {15:>12}  disabled"]
    assert ok("store", "prune") == "deleted 0 run(s)"
    refused = flask(tmp_path, pg_url, "store", "backup", str(tmp_path / "b"))
    assert refused.returncode != 0 and "pg_dump" in refused.stderr


@pytest.mark.parametrize("url", ["postgresql://runner:s3cret@db:port/runner",
                                 "mysql://db/runner", "var/runner.sqlite3"])
def test_a_malformed_database_url_is_one_line_and_a_failure(tmp_path, url):
    done = flask(tmp_path, url, "token", "list")
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "RUNNER_DATABASE_URL" in done.stderr and "s3cret" not in done.stderr


def test_a_store_that_cannot_be_reached_is_one_line_and_a_failure(tmp_path):
    done = flask(tmp_path, f"postgresql://runner@127.0.0.1:{free_port()}/runner",
                 "token", "list")
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # The server's own reason, at once: not a pool's retries and its timeout.
    assert done.stderr.startswith("Error: the store is unavailable: connection failed")
    assert "Connection refused" in done.stderr
