"""Every example in docs/ runs: each ```json request block is sent to the API and the
```json response block after it must match what comes back.

In a response block, "…" matches any value, and an object matches when it has at
least the keys shown (with matching values).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import DEV_AUTH

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```json (request|response)([^\n]*)\n(.*?)^```", re.S | re.M)
ANY = "…"


def examples() -> list:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        blocks = BLOCK.findall(page.read_text())
        for i, (kind, args, text) in enumerate(blocks):
            if kind != "request":
                continue
            assert i + 1 < len(blocks) and blocks[i + 1][0] == "response", \
                f"{page.name}: a request block without a response block after it"
            found.append(pytest.param(args.split(), json.loads(text), blocks[i + 1][1].split(),
                                      json.loads(blocks[i + 1][2]),
                                      id=f"{page.stem}-{len(found) + 1}"))
    return found


def matches(expected, actual) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual


def test_docs_have_examples():
    assert len(examples()) >= 20


@pytest.mark.parametrize("request_args, body, response_args, expected", examples())
def test_example(client, request_args, body, response_args, expected):
    method, path = request_args or ["POST", "/v1/runs/sync"]
    status = int(response_args[0]) if response_args else 200
    response = client.open(path, method=method, json=body, headers=DEV_AUTH)
    assert response.status_code == status, response.get_data(as_text=True)
    assert matches(expected, response.json), json.dumps(response.json, indent=1)
