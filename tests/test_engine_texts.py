"""What leaves the engine as text: node inputs and results redacted (SPEC §9) whether
or not the engine spares the redactor's walk over a value (app/engine.py, ``_text``)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.redact import REDACTED, is_secret_key
from tests.fuzz_strategies import json_values
from tests.helpers import definition, run_engine

pytestmark = pytest.mark.usefixtures("test_nodes")

# Keys a look at the JSON text could get wrong: secret ones with "-", "_", capitals, a
# Kelvin sign (lowercases to "k"), an escape before the secret word; ordinary ones
# holding a secret word, or escapes, quotes and colons.
TRICKY_KEYS = ["name", "token", "Pass-Word", "db_password_", "x-api-key", "Authorization",
               "to\u212aen", "x\ntoken", 'x"token', "a\\token", "é-secret", "monkey",
               "tokenizer", "author", 'say":', "a\\", "", "items", "İd", "SECRETS"]


def _redacted_copy(value):
    """SPEC §9 without sensitive values: every value under a secret key replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else _redacted_copy(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted_copy(v) for v in value]
    return value


def _echoed(value, node_type: str = "t-echo-inline") -> dict:
    """The run of root > echo, the request payload ``{"v": value}``: the root's result,
    the echo's input and its result hold ``value``."""
    out = run_engine({"definition": definition("root>echo", echo={
        "type": node_type, "payload": {"value": "{{root.result.v}}"}}),
        "payload": {"v": value}})
    assert out["status"] == "success", out
    return out["executionState"]


KEYED_VALUES = st.recursive(
    json_values, lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(TRICKY_KEYS), children, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(KEYED_VALUES)
def test_inputs_and_results_are_redacted_as_the_walk_redacts_them(value):
    state = _echoed(value)
    expected = _redacted_copy(value)
    assert state["root"]["result"]["v"] == expected
    assert state["echo"]["input"] == {"value": expected}
    assert state["echo"]["result"]["value"] == expected


@pytest.mark.parametrize("key", [k for k in TRICKY_KEYS if is_secret_key(k)])
@pytest.mark.parametrize("node_type", ["t-echo-inline", "t-echo"])
def test_each_secret_key_is_redacted_at_any_depth(key, node_type):
    value = [{"outer": {key: "hunter2", "kept": key}}]
    state = _echoed(value, node_type)
    expected = [{"outer": {key: REDACTED, "kept": key}}]
    for entry in (state["root"]["result"]["v"], state["echo"]["input"]["value"],
                  state["echo"]["result"]["value"]):
        assert entry == expected
    assert "hunter2" not in json.dumps(state)


def test_ordinary_keys_that_hold_secret_words_are_kept():
    value = {"monkey": 1, "tokenizer": {"author": "a token"}, "secret word": "x"}
    state = _echoed(value)
    assert state["echo"]["result"]["value"] == {"monkey": 1, "tokenizer": {"author": "a token"},
                                                "secret word": "x"}
