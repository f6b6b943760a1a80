"""Every example in docs/ runs: each ```json request block is sent to the API and the
```json response block after it must match what comes back.

In a response block, "…" matches any value, and an object matches when it has at
least the keys shown (with matching values).

Examples that call the sample API at ``https://shop.example`` reach a real HTTP
server on 127.0.0.1 instead (``SHOP``'s routes): the test points that origin at the
server and lets those examples, and only those, through the outbound allow-list.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import DEV_AUTH
from tests.http_support import Handler, Seen, reply, serve

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```json (request|response)([^\n]*)\n(.*?)^```", re.S | re.M)
ANY = "…"

# -- the sample API --------------------------------------------------------------

SHOP = "https://shop.example"
ORDERS = [{"id": "A-1", "sku": "tea", "qty": 2},
          {"id": "A-2", "sku": "jam", "qty": 4},
          {"id": "A-3", "sku": "tea", "qty": 1}]
STOCK = {"tea": 5, "jam": 1}


def _json(handler: Handler, value, status: int = 200) -> None:
    reply(handler, status, json.dumps(value).encode(), (("Content-Type", "application/json"),))


def _orders(handler: Handler, seen: Seen) -> None:
    _json(handler, {"orders": ORDERS})


def _stock(handler: Handler, seen: Seen) -> None:
    sku = parse_qs(urlsplit(seen.path).query).get("sku", [""])[0]
    if sku not in STOCK:
        _json(handler, {"error": f"unknown sku {sku!r}"}, 404)
        return
    _json(handler, {"sku": sku, "available": STOCK[sku]})


@pytest.fixture
def shop():
    with serve() as srv:
        srv.routes.update({"/orders": _orders, "/stock": _stock})
        yield srv


# -- the examples ----------------------------------------------------------------

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
def test_example(app, client, request, request_args, body, response_args, expected):
    method, path = request_args or ["POST", "/v1/runs/sync"]
    status = int(response_args[0]) if response_args else 200
    text = json.dumps(body)
    if SHOP in text:
        server = request.getfixturevalue("shop")
        body = json.loads(text.replace(SHOP, server.url("")))
        app.config["OUTBOUND_ALLOW"] = ["127.0.0.1/32"]
    response = client.open(path, method=method, json=body, headers=DEV_AUTH)
    assert response.status_code == status, response.get_data(as_text=True)
    assert matches(expected, response.json), json.dumps(response.json, indent=1)
