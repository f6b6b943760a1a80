"""The operator's commands: flask --app wsgi token … / store …, and the same as `runner …`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import __version__ as app_version
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


# -- the console script: `runner …` from anywhere --------------------------------------

RUNNER = str(Path(sys.executable).parent / "runner")


def runner(cwd: Path, *args: str, **settings: str):
    """``runner …`` in a process of its own, in ``cwd``, with only the given RUNNER_
    settings."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNNER_")}
    env.update({f"RUNNER_{k}": v for k, v in settings.items()})
    return subprocess.run([RUNNER, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A directory that is not the checkout, with nothing in it."""
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "elsewhere"


def test_runner_runs_from_any_directory_without_writing_the_log(tmp_path, elsewhere):
    store = tmp_path / "srv" / "runner.sqlite3"
    (tmp_path / "a-file").write_text("")
    # No log file can ever be made under a regular file, whoever runs the command.
    unwritable = str(tmp_path / "a-file" / "app.log")
    settings = {"STORE_PATH": str(store), "LOG_FILE": unwritable}
    done = runner(elsewhere, "token", "seed-dev", **settings)
    assert done.returncode == 0 and done.stdout == "dev-token: balance 1000000\n", done.stderr
    done = runner(elsewhere, "token", "create", "erin", "--balance", "3", **settings)
    assert done.returncode == 0 and done.stdout.startswith("wr_"), done.stderr
    listed = runner(elsewhere, "token", "list", **settings)
    assert listed.stdout.splitlines()[1:] == [f"{'dev-token':<24} {1_000_000:>12}  enabled",
                                              f"{'erin':<24} {3:>12}  enabled"]
    assert listed.stderr == "" and os.listdir(elsewhere) == []
    assert runner(elsewhere, "store", "prune", **settings).stdout == "deleted 0 run(s)\n"


def test_runner_names_the_store_it_did_not_find(elsewhere):
    done = runner(elsewhere, "token", "list")
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"no store at {elsewhere / 'var' / 'runner.sqlite3'}" in done.stderr
    assert "RUNNER_STORE_PATH" in done.stderr and os.listdir(elsewhere) == []
    given = runner(elsewhere, "token", "list", DATABASE_URL="sqlite:///nowhere/x.sqlite3")
    assert given.returncode == 1 and "RUNNER_DATABASE_URL" in given.stderr
    assert f"no store at {elsewhere / 'nowhere' / 'x.sqlite3'}" in given.stderr


@pytest.fixture
def service_store(tmp_path) -> tuple[Path, dict]:
    """A store and a log file in a directory of their own, the store made; root's."""
    service = tmp_path / "srv"
    service.mkdir()
    log = service / "app.log"
    log.write_text("")
    log.chmod(0o600)
    settings = {"STORE_PATH": str(service / "runner.sqlite3"), "LOG_FILE": str(log)}
    assert runner(tmp_path, "token", "seed-dev", **settings).returncode == 0
    return service, settings


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give the store to another user")
def test_root_may_not_write_a_store_another_user_owns(tmp_path, elsewhere, service_store):
    """Its journal files would be root's, and the service could not open them."""
    service, settings = service_store
    for path in (service, service / "runner.sqlite3"):
        os.chown(path, 65534, 65534)  # nobody's, as a service's user's would be
    files = sorted(os.listdir(service))
    refused = runner(elsewhere, "token", "list", **settings)
    assert refused.returncode == 1 and "belongs to another user" in refused.stderr
    assert f"the store {service / 'runner.sqlite3'}" in refused.stderr
    assert sorted(os.listdir(service)) == files  # no journal of root's beside it


def test_runner_has_the_commands_of_flask(elsewhere):
    def commands(*args: str) -> set[str]:
        done = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        listed = done.stdout.split("Commands:")[1].splitlines()
        return {line.split()[0] for line in listed if line.strip()}

    assert commands(RUNNER, "--help") == {"token", "store", "run-workflow"}
    assert commands(sys.executable, "-m", "flask", "--app", "wsgi", "--help") >= {
        "token", "store", "run-workflow"}
    assert commands(RUNNER, "token", "--help") == commands(
        sys.executable, "-m", "flask", "--app", "wsgi", "token", "--help") == {
        "create", "list", "top-up", "disable", "enable", "seed-dev"}
    version = runner(elsewhere, "--version")
    assert version.stdout.strip() == f"runner, version {app_version}"


def test_a_misspelled_setting_is_named_with_the_nearest_one(tmp_path, elsewhere):
    settings = {"STORE_PATH": str(tmp_path / "runner.sqlite3"), "MAX_NODE": "3",
                "OUTBOUND_ALOW": "10.0.0.0/8"}
    done = runner(elsewhere, "token", "seed-dev", **settings)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "warning: RUNNER_MAX_NODE is not a setting and is ignored; did you mean "
        "RUNNER_MAX_NODES?",
        "warning: RUNNER_OUTBOUND_ALOW is not a setting and is ignored; did you mean "
        "RUNNER_OUTBOUND_ALLOW?"]


@pytest.mark.parametrize("command", [[RUNNER], [sys.executable, "-m", "flask", "--app", "wsgi"]])
def test_a_bad_setting_stops_a_command_with_one_line(tmp_path, command):
    env = {**os.environ, "RUNNER_STORE_PATH": str(tmp_path / "runner.sqlite3"),
           "RUNNER_RUN_DEADLINE_MS": "soon"}
    done = subprocess.run([*command, "token", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        ("Error: " if command == [RUNNER] else "")
        + "cannot start: RUNNER_RUN_DEADLINE_MS='soon': must be a whole number"]
