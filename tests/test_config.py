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
    ("RUNNER_OUTBOUND_ALLOW", "bad host!"), ("RUNNER_OUTBOUND_ALLOW", "fe80::1::2")])
def test_bad_values_stop_the_start_up_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        config.from_env({name: value})
