"""Settings: defaults, the environment, failing fast on bad values."""
from __future__ import annotations

import pytest

from app import config


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
    ("RUNNER_DATABASE_URL", "var/runner.sqlite3")])
def test_bad_values_stop_the_start_up_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        config.from_env({name: value})


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
