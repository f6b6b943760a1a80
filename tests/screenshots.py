"""The screenshots of the pages in docs/ (``make screenshots``), taken of a real run on real
gunicorn in Debian's Chromium, so they show what the pages really do."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.browser import SHOWCASE, chromium, missing, page_with_token, paste
from tests.server import ROOT, Server

DOCS = ROOT / "docs"
# The branches example of the playground's menu, with a child that does not exist.
BROKEN = (ROOT / "app" / "static" / "examples" / "branches.json").read_text().replace(
    '"children": ["done"]},\n    "ok"', '"children": ["dne"]},\n    "ok"').rstrip()


def run_page(server: Server, context) -> None:
    status, run = server.request("POST", "/v1/runs/sync", SHOWCASE)
    assert status == 200, run
    page = page_with_token(context).page
    page.set_viewport_size({"width": 1280, "height": 1400})  # the whole graph in its panel
    page.goto(f"{server.base}/runs/{run['runId']}")
    page.wait_for_selector("html[data-load-ms]")
    page.click("[data-node=flaky]")
    page.screenshot(path=DOCS / "run-page.png", full_page=True)
    page.close()


def playground(server: Server, context) -> None:
    page = page_with_token(context).page
    page.set_viewport_size({"width": 1280, "height": 760})
    page.goto(f"{server.base}/playground")
    page.wait_for_selector("html[data-ready]")
    page.select_option("#example", "branches")
    paste(page, BROKEN)
    page.click("#validate")
    page.wait_for_selector("#problems li")
    page.screenshot(path=DOCS / "playground.png")
    page.close()


def main() -> int:
    why = missing()
    if why:
        print(f"make screenshots: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as work:
        server = Server(Path(work), MAX_CONCURRENT_RUNS="0")
        server.flask("token", "seed-dev")
        server.start()
        try:
            with chromium() as context:
                run_page(server, context)
                playground(server, context)
        finally:
            server.stop()
    for name in ("run-page.png", "playground.png"):
        print(f"docs/{name}: {(DOCS / name).stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
