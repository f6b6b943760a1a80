"""Redaction of secrets wherever data leaves the process (SPEC §9).

A key is secret when its lowercase form without ``-`` and ``_`` equals or ends
with one of ``SECRET_SUFFIXES``; its value becomes ``"[redacted]"``. The values
of the props named in ``sensitivePropKeys`` are replaced wherever they appear,
whole or inside text. Handlers and expressions keep the real values: only the
response, the stored run and the logs are redacted.
"""
from __future__ import annotations

import functools
from typing import Any

REDACTED = "[redacted]"
SECRET_SUFFIXES = ("authorization", "cookie", "password", "secret", "token", "apikey",
                   "privatekey")


@functools.lru_cache(maxsize=4096)  # the same keys come back in every run
def is_secret_key(key: str) -> bool:
    """True for keys such as ``Authorization``, ``x-api-key``, ``db_password``."""
    return key.lower().replace("-", "").replace("_", "").endswith(SECRET_SUFFIXES)


class Redactor:
    """Redacts secret keys and a run's sensitive prop values from JSON values and text."""

    def __init__(self, sensitive_values: list[Any] = ()):
        # Longest first, so a value that contains another is replaced whole.
        self.texts = sorted({v for v in sensitive_values if isinstance(v, str) and v},
                            key=len, reverse=True)
        self.others = [v for v in sensitive_values if not isinstance(v, str) and v is not None]

    @classmethod
    def for_run(cls, definition: dict, prop_values: dict) -> Redactor:
        """The redactor of a run: the values of its ``sensitivePropKeys``."""
        props = {**definition.get("props", {}), **prop_values}
        keys = definition.get("sensitivePropKeys", [])
        return cls([props[k] for k in keys if k in props])

    def text(self, text: str) -> str:
        for secret in self.texts:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A redacted copy of a JSON value."""
        if not self.texts and not self.others:
            return _secret_keys_only(value)  # most runs: no sensitive values
        if isinstance(value, str):
            return self.text(value) if self.texts else value
        if isinstance(value, dict):
            return {k: REDACTED if is_secret_key(k) else self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if self.others and not isinstance(value, bool) and value in self.others:
            return REDACTED
        return value

    def run(self, body: dict) -> dict:
        """A response / stored run with every node's input and result redacted, and the
        messages of errors (their codes are ours, never a secret)."""
        out = dict(body)
        if body.get("error"):
            out["error"] = self._error(body["error"])
        out["executionState"] = {node_id: self._node(state) for node_id, state
                                 in body.get("executionState", {}).items()}
        return out

    def _node(self, state: dict) -> dict:
        state = dict(state)
        for key in ("input", "result"):
            if key in state:
                state[key] = self.value(state[key])
        if "error" in state:
            state["error"] = self._error(state["error"])
        return state

    def _error(self, error: dict) -> dict:
        return {**error, "message": self.value(error.get("message", ""))}


def _secret_keys_only(value: Any) -> Any:
    """``Redactor().value(value)``: only secret keys to redact, so scalars are kept as they
    are without a call each (this runs over every node's input and result)."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else
                _secret_keys_only(v) if isinstance(v, (dict, list)) else v
                for k, v in value.items()}
    if isinstance(value, list):
        return [_secret_keys_only(v) if isinstance(v, (dict, list)) else v for v in value]
    return value
