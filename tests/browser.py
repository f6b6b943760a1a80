"""Debian's Chromium, driven headless by Playwright, for the pages' tests and screenshots.

Playwright's own browsers are never downloaded: it drives ``/usr/bin/chromium`` (Debian's
package ``chromium``), with a new empty profile each time and without the browser's own
traffic to other hosts (updates, sync, safe browsing), which a closed network refuses.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic"]
TOKEN_SCRIPT = "sessionStorage.setItem('runner.token', {token!r})"

# A run with a node in every state: a fan-out and its join, an if and the branch not taken,
# a loop whose body branches per item, a node retried until it fails, what that skips,
# and a secret in the payload.
SHOWCASE = {
    "definition": {"nodes": {
        "root": {"type": "manual", "children": ["greet", "tag", "flaky"]},
        "greet": {"type": "hello-world", "payload": {"name": "{{root.result.user}}"},
                  "children": ["join"]},
        "tag": {"type": "generate-id", "payload": {"format": "shortid"}, "children": ["join"]},
        "join": {"type": "log",
                 "payload": {"message": "{{greet.result.message}} #{{tag.result.id}}"},
                 "children": ["check"]},
        "check": {"type": "if", "children": ["alert", "calm"], "payload": {
            "condition": {"$and": [{"{{root.result.total}}": {"$gt": 10}}]}}},
        "alert": {"type": "log", "branch": "then", "children": ["each"],
                  "payload": {"message": "total {{root.result.total}} is high"}},
        "calm": {"type": "log", "branch": "else", "payload": {"message": "fine"}},
        "each": {"type": "for-each", "payload": {"array": "{{root.result.prices}}"},
                 "loopBody": ["cheap"], "children": ["report"]},
        "cheap": {"type": "if", "children": ["buy", "pass"], "payload": {
            "condition": {"$and": [{"{{$item}}": {"$lt": 10}}]}}},
        "buy": {"type": "log", "branch": "then", "payload": {"message": "buy at {{$item}}"}},
        "pass": {"type": "log", "branch": "else", "payload": {"message": "{{$item}} is dear"}},
        "report": {"type": "log",
                   "payload": {"message": "{{each.result.iterationCount}} prices seen"}},
        "flaky": {"type": "delay", "timeoutMs": 40, "payload": {"delayMs": 1000},
                  "retry": {"maxAttempts": 2, "initialDelayMs": 60}, "children": ["after"]},
        "after": {"type": "log", "payload": {"message": "never"}},
    }},
    "payload": {"user": "Ann", "total": 42, "prices": [3, 12, 7], "apiKey": "sk-live-1234"},
}


def missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if shutil.which(CHROMIUM) is None:
        return f"no {CHROMIUM}: install Debian's chromium (make test does, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright: pip install -e '.[test]'"
    return None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A browser context (Playwright's ``BrowserContext``) on a new empty profile."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        try:
            yield context
        finally:
            context.close()


REFUSED = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


class Watched:
    """A page whose console errors and uncaught exceptions are collected in ``errors``,
    except the browser's own line about each answer of 400 or more, whose statuses are
    ``refused`` (an API that refuses a request says so by its status, as it should)."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.refused: list[int] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"exception: {error}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        refused = REFUSED.match(message.text)
        if refused:
            self.refused.append(int(refused.group(1)))
        else:
            self.errors.append(f"console: {message.text}")


def paste(page, text: str, editor: str = ".cm-content") -> None:
    """Replace the editor's text by pasting ``text``, as a person would. (Playwright's
    ``fill`` types through the browser's own editing, which writes style attributes the
    page's policy refuses, before the editor takes the text over.)"""
    page.click(editor)
    page.keyboard.press("Control+a")
    page.eval_on_selector(editor, """(editor, text) => {
        const data = new DataTransfer();
        data.setData("text/plain", text);
        editor.dispatchEvent(new ClipboardEvent("paste", {
            clipboardData: data, bubbles: true, cancelable: true}));
    }""", text)


def page_with_token(context, token: str = "dev-token") -> Watched:
    """A new page whose tab holds ``token`` already (as if it had been typed once)."""
    page = context.new_page()
    page.add_init_script(TOKEN_SCRIPT.format(token=token))
    return Watched(page)
