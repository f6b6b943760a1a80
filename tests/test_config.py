"""Settings: defaults, the environment, failing fast on bad values."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app import config
from tests.server import ROOT, Server


def test_defaults_and_environment():
    settings = config.load()
    assert settings["MAX_NODES"] == 20 and settings["RUN_DEADLINE_MS"] == 60_000
    env = {"RUNNER_MAX_NODES": "30", "RUNNER_OUTBOUND_ALLOW": "10.1.0.0/16, billing.internal,::1"}
    assert config.from_env(env) == {"MAX_NODES": 30,
                                    "OUTBOUND_ALLOW": ["10.1.0.0/16", "billing.internal", "::1"]}


@pytest.mark.parametrize("name, value", [
    ("RUNNER_MAX_NODES", "many"), ("RUNNER_MAX_NODES", "1"), ("RUNNER_MAX_BODY_BYTES", "0"),
    ("RUNNER_RUN_DEADLINE_MS", "-5"), ("RUNNER_OUTBOUND_ALLOW", "10.0.0.0/33"),
    ("RUNNER_OUTBOUND_ALLOW", "bad host!"), ("RUNNER_OUTBOUND_ALLOW", "fe80::1::2"),
    ("RUNNER_DATABASE_URL", "mysql://db/runner"), ("RUNNER_DATABASE_URL", "sqlite:///"),
    ("RUNNER_DATABASE_URL", "postgresql://db:port/runner"),
    ("RUNNER_DATABASE_URL", "var/runner.sqlite3"), ("RUNNER_CORS_ORIGINS", "*"),
    ("RUNNER_SQLITE_SYNCHRONOUS", "off"),
    ("RUNNER_CORS_ORIGINS", "https://app.example.com/api"),
    ("RUNNER_CORS_ORIGINS", "app.example.com")])
def test_bad_values_stop_the_start_up_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        config.from_env({name: value})


def test_cors_origins_are_written_as_browsers_send_them():
    given = {"RUNNER_CORS_ORIGINS": "https://App.Example.com/, http://localhost:3000, "
                                    "https://x.org:443, http://[::1]:8080"}
    assert config.from_env(given)["CORS_ORIGINS"] == [
        "https://app.example.com", "http://localhost:3000", "https://x.org", "http://[::1]:8080"]
    assert config.load()["CORS_ORIGINS"] == []  # off by default


def test_gunicorn_limits_and_run_expiry_follow_the_deadline():
    settings = {"RUN_DEADLINE_MS": 60_000}
    assert config.graceful_timeout_s(settings) == 75
    assert config.hard_timeout_s(settings) == 90  # the run answers by its deadline first
    assert config.run_expiry_s(settings) == 120  # past the hard timeout: certainly dead
    assert config.run_expiry_s({"RUN_DEADLINE_MS": 1500}) == 61.5


def test_the_database_url_defaults_to_the_sqlite_store_path():
    assert config.database_url({"DATABASE_URL": "", "STORE_PATH": "var/x.sqlite3"}) == (
        "sqlite:///var/x.sqlite3")
    given = {"DATABASE_URL": "postgresql://runner@db/runner", "STORE_PATH": "var/x.sqlite3"}
    assert config.database_url(given) == "postgresql://runner@db/runner"
    assert config.parse_database_url("sqlite:////srv/runner.sqlite3") == (
        "sqlite", "/srv/runner.sqlite3")
    assert config.parse_database_url("postgresql:///runner?host=/run/pg")[0] == "postgresql"


def test_unknown_variables_are_named_with_the_nearest_setting():
    env = {"RUNNER_MAX_NODE": "3", "runner_log_file": "x", "RUNNER_FROBNICATE": "1",
           "RUNNER_MAX_NODES": "3", "RUNNER_TEST_DATABASE_URL": "postgresql://db/t",
           "OTHER_MAX_NODE": "1", "RUNNER_OS": "Linux", "RUNNER_TEMP": "/tmp"}
    assert config.unknown_variables(env) == [
        "RUNNER_FROBNICATE is not a setting and is ignored",
        "RUNNER_MAX_NODE is not a setting and is ignored; did you mean RUNNER_MAX_NODES?",
        "runner_log_file is not a setting and is ignored; did you mean RUNNER_LOG_FILE?"]
    assert config.unknown_variables({f"RUNNER_{name}": "" for name in config.SETTINGS}) == []


# -- at gunicorn's start-up ------------------------------------------------------------

@pytest.mark.server
def test_gunicorn_warns_of_a_misspelled_setting(tmp_path):
    server = Server(tmp_path, workers=1, MAX_NODE="3").start()
    try:
        lines = [json.loads(line) for line in server.log_tail(1000).splitlines()]
    finally:
        server.stop()
    warned = [line["message"] for line in lines if line["level"] == "WARNING"
              and "RUNNER_MAX_NODE" in line["message"]]
    assert warned == ["RUNNER_MAX_NODE is not a setting and is ignored; did you mean "
                      "RUNNER_MAX_NODES?"]


@pytest.mark.server
@pytest.mark.parametrize("name", ["RUN_DEADLINE_MS", "MAX_NODES"])
def test_a_bad_value_stops_gunicorn_with_one_line(tmp_path, name):
    """RUN_DEADLINE_MS is read by gunicorn.conf.py itself (its timeouts follow it)."""
    server = Server(tmp_path, workers=1, **{name: "soon"})
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                           "wsgi:app"], cwd=ROOT, env=server.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    output = (done.stdout + done.stderr).splitlines()
    assert "Traceback" not in done.stdout + done.stderr
    errors = [json.loads(line)["message"] for line in output if '"ERROR"' in line]
    assert errors == [f"cannot start: RUNNER_{name}='soon': must be a whole number"]
