"""A sample HTTP API for the examples and the tutorial, on 127.0.0.1 (Python's standard
library only):

    python examples/sample_api.py [PORT]      # default 8089; Ctrl-C stops it

- ``GET /orders``: a shop's open orders; ``GET /stock?sku=tea``: what is in stock
  (404 for an unknown sku);
- ``GET /prices?ids=ethereum,bitcoin&vs=usd``: prices, shaped as CoinGecko's
  ``simple/price`` answers;
- ``GET /transfers``: recent token transfers, amounts in wei (strings);
- ``GET /wallets/<address>``: a wallet's balance in wei;
- ``POST /hooks``: a webhook receiver (answers 201); ``GET /hooks`` lists what it got.

The service refuses internal addresses unless told otherwise: start it with
``RUNNER_OUTBOUND_ALLOW=127.0.0.1`` (``make run`` and ``runner run-workflow`` alike) to
let workflows call this API. The tests start it on a free port (``serve``).
"""
from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = 8089
ORDERS = [{"id": "A-1", "sku": "tea", "qty": 2, "price": 4.5},
          {"id": "A-2", "sku": "jam", "qty": 4, "price": 3.25},
          {"id": "A-3", "sku": "tea", "qty": 1, "price": 4.5}]
STOCK = {"tea": 5, "jam": 1}
PRICES = {"ethereum": {"usd": 1850.5, "eur": 1702.25}, "bitcoin": {"usd": 64250, "eur": 59110}}
TRANSFERS = [
    {"hash": "0x5e1f", "from": "0x1111", "to": "0x2222", "value": "250000000000000000"},
    {"hash": "0x7a02", "from": "0x3333", "to": "0x2222", "value": "12500000000000000000"},
    {"hash": "0x9c33", "from": "0x2222", "to": "0x4444", "value": "3000000000000000000"},
    {"hash": "0xb4d4", "from": "0x5555", "to": "0x1111", "value": "90000000000000000"}]
WALLETS = {"0x1111": "2500000000000000000", "0x2222": "40000000000000000",
           "0x3333": "0"}


class Handler(BaseHTTPRequestHandler):
    timeout = 5

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/orders":
            self._json({"orders": ORDERS})
        elif url.path == "/stock":
            sku = query.get("sku", "")
            if sku in STOCK:
                self._json({"sku": sku, "available": STOCK[sku]})
            else:
                self._json({"error": f"unknown sku {sku!r}"}, 404)
        elif url.path == "/prices":
            ids = [i for i in query.get("ids", "").split(",") if i in PRICES]
            vs = query.get("vs", "usd")
            self._json({i: {vs: PRICES[i][vs]} for i in ids if vs in PRICES[i]})
        elif url.path == "/transfers":
            self._json({"transfers": TRANSFERS})
        elif url.path.startswith("/wallets/") and url.path[9:] in WALLETS:
            self._json({"address": url.path[9:], "wei": WALLETS[url.path[9:]]})
        elif url.path == "/hooks":
            self._json({"received": self.server.hooks})
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/hooks":
            self._json({"error": "not found"}, 404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            received = json.loads(body)
        except ValueError:
            received = body.decode(errors="replace")
        self.server.hooks.append(received)
        self._json({"id": len(self.server.hooks)}, 201)

    def _json(self, value, status: int = 200) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class SampleAPI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = PORT):
        super().__init__(("127.0.0.1", port), Handler)
        self.hooks: list = []  # what POST /hooks received, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@contextmanager
def serve(port: int = 0) -> Iterator[SampleAPI]:
    """The sample API on ``port`` (0: a free one) in a thread, until the block ends."""
    server = SampleAPI(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    api = SampleAPI(int(sys.argv[1]) if len(sys.argv) > 1 else PORT)
    print(f"sample API on {api.url} (Ctrl-C stops it)", flush=True)
    with suppress(KeyboardInterrupt):
        api.serve_forever()
