"""The pages for people (app/pages.py, SPEC §14) as served: shells without data or
inline code under a strict Content-Security-Policy, files from this service only, the
vendored libraries within their budget, the playground's examples true to docs/.
What the pages do in a browser is tests/test_viewer.py."""
from __future__ import annotations

import configparser
import fnmatch
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app.pages import EXAMPLES
from tests.test_docs import BLOCK, DOCS

APP = Path(__file__).resolve().parent.parent / "app"
STATIC = APP / "static"
PAGES = ["/runs/run_anything", "/runs", "/playground"]
VENDOR_BUDGET = 500 * 1024


class Markup(HTMLParser):
    """What a page's HTML holds: its scripts, styles and style attributes."""

    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.inline, self.links = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "style":
            self.styles += 1
        if "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline.append((tag, attrs))
        for name in ("src", "href"):
            if name in attrs:
                self.links.append(attrs[name])


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_without_a_token_under_a_strict_policy(client, path):
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = dict(part.strip().split(" ", 1)
                  for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive  # no inline code, no other origin
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", PAGES)
def test_pages_hold_no_data_no_inline_code_and_only_files_of_this_service(client, path):
    markup = Markup()
    markup.feed(client.get(path).get_data(as_text=True))
    assert [script.get("type") for script in markup.scripts] == ["module"]
    assert all(script.get("src", "").startswith("/static/js/") for script in markup.scripts)
    assert markup.styles == 0 and markup.inline == []
    assert all(link.startswith("/") or link.startswith("#") for link in markup.links)
    for link in markup.links:
        if link.startswith("/static/"):
            with client.get(link) as response:
                assert response.status_code == 200, link
    assert "test-token" not in client.get(path).get_data(as_text=True)


def test_static_files_are_served_with_their_types_and_the_policy(client):
    with client.get("/static/js/run.js") as script:
        assert script.status_code == 200
        assert script.mimetype in {"text/javascript", "application/javascript"}
        assert "Content-Security-Policy" in script.headers
    with client.get("/static/pages.css") as style:
        assert style.mimetype == "text/css"
    assert client.get("/static/nothing.js").status_code == 404


def test_no_static_file_names_another_host():
    # SVG's namespace is a name, not a place a file is fetched from.
    other_host = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}",
                            re.I)
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and path.suffix in {".js", ".css", ".html", ".svg"}:
            found = other_host.findall(path.read_text())
            assert found == [], f"{path.relative_to(APP)}: {found[:3]}"


def test_vendored_libraries_stay_within_their_budget_and_carry_their_licences():
    vendored = [path for path in (STATIC / "vendor").iterdir() if path.is_file()]
    total = sum(path.stat().st_size for path in vendored)
    print(f"\nvendored front-end files: {total / 1024:.0f} KB of {VENDOR_BUDGET // 1024} KB")
    assert total < VENDOR_BUDGET
    licences = (STATIC / "vendor" / "LICENSES.txt").read_text()
    for package in ("@dagrejs/dagre", "@codemirror/view", "@codemirror/lang-json"):
        assert re.search(rf"^{re.escape(package)} \d+\.\d+\.\d+ \(MIT\)$", licences, re.M), package


def test_every_page_file_is_installed_with_the_package():
    config = configparser.ConfigParser()
    config.read(APP.parent / "setup.cfg")
    patterns = config["options.package_data"]["app"].split()
    for folder in ("static", "templates"):
        for path in (APP / folder).rglob("*"):
            if path.is_file():
                name = path.relative_to(APP).as_posix()
                assert any(fnmatch.fnmatch(name, pattern) and name.count("/") ==
                           pattern.count("/") for pattern in patterns), name


def test_the_playgrounds_examples_are_docs_examples_as_written(client):
    requests = {text for page in DOCS.glob("*.md")
                for kind, _, text in BLOCK.findall(page.read_text()) if kind == "request"}
    files = {path.stem for path in (STATIC / "examples").glob("*.json")}
    assert files == set(EXAMPLES)
    for name in EXAMPLES:
        assert (STATIC / "examples" / f"{name}.json").read_text() in requests, name
    menu = client.get("/playground").get_data(as_text=True)
    assert all(f'<option value="{name}">' in menu for name in EXAMPLES)
