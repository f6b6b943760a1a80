"""A client of the runner's API for scripts, on the standard library alone (urllib, json).

    from app.client import Client

    client = Client("http://127.0.0.1:8000", "dev-token")
    answer = client.run_sync(definition, payload={"message": "hello"})
    for event in client.stream(definition):      # the same run, event by event
        print(event.name, event.data)
    run_id = client.start(definition)            # 202: the run goes on without us
    for event in client.follow(run_id): ...      # from any worker of any host
    client.cancel(run_id)

Every call is one request on a connection of its own, so a ``Client`` may be shared
between threads. An error answer raises ``ApiError`` (its HTTP status, ``code``,
``message`` and ``errors``); a server that cannot be reached raises urllib's own
``URLError`` or ``TimeoutError``. The module imports nothing else of the app (an import
contract in setup.cfg says so): it can be copied into a project on its own.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

# A sync run lasts up to 60 s by default; a stream writes a line at least every 15 s.
DEFAULT_TIMEOUT_S = 90.0


class ApiError(Exception):
    """An error answer (SPEC §6): ``status`` (HTTP), ``code`` (400228…), ``message``,
    ``errors`` (location → problems), ``request_id``, ``retry_after`` (seconds, from a
    429's or 503's header) and ``body``, all of it (a 402's ``balance`` and ``required``)."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None):
        self.status, self.body, self.retry_after = status, body, retry_after
        self.code: int | None = body.get("code")
        self.message: str = body.get("message") or ""
        self.errors: dict[str, list[str]] = body.get("errors") or {}
        self.request_id: str | None = body.get("requestId")
        super().__init__(f"{status} {self.code}: {self.message}")


class Event(NamedTuple):
    """One Server-Sent Event: ``name`` (its ``event:``, "message" without one), ``data``
    (its ``data:`` lines joined by newlines, parsed when they are JSON), ``id`` (the last
    ``id:`` the stream gave, None before any)."""

    name: str
    data: Any
    id: str | None


class EventStream:
    """The events of one stream as they come; the last of a run's is ``run.finished``,
    whose data is the run's answer. An ``error`` event (the server stopped the run)
    raises ``ApiError``. Closing it, or leaving its ``with`` block, hangs up, which
    frees the server's worker at once."""

    def __init__(self, response):
        self._response = response
        self._events = parse_events(iter(response.readline, b""))

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        try:
            event = next(self._events)
        except BaseException:
            self.close()
            raise
        if event.name == "error":
            self.close()
            body = event.data if isinstance(event.data, dict) else {"message": str(event.data)}
            raise ApiError(int(body.get("code") or 500000) // 1000, body)
        return event

    def close(self) -> None:
        """Hang up (the rest of the stream is not read)."""
        self._response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def parse_events(lines: Iterable[bytes]) -> Iterator[Event]:
    """The events of a stream given line by line (as ``readline`` cuts it, at LF), by the
    rules of the HTML standard: ``field: value`` lines (one space after the colon is
    dropped), lines ending in CRLF, LF or CR, comment lines starting with ``:``, unknown
    fields and ``retry`` ignored; a blank line ends an event, and an event without
    ``data`` is not given, nor one the stream ends before its blank line."""
    name, data, last_id = "", [], None
    first = True
    for line in _text_lines(lines):
        if first:
            line, first = line.removeprefix("\ufeff"), False
        if not line:
            if data:
                yield Event(name or "message", _value("\n".join(data)), last_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value


def _text_lines(lines: Iterable[bytes]) -> Iterator[str]:
    """Whole lines, without their ends; a line the stream ends in the middle of is not
    given. (UTF-8 never puts CR or LF inside a character, so each piece decodes alone.)"""
    for raw in lines:
        text = raw.decode("utf-8", "replace")
        ended = text.endswith("\n")
        if ended:
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        parts = text.split("\r")  # a lone CR ends a line too
        yield from parts if ended else parts[:-1]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class Client:
    """The API of one service for one token. ``timeout``: seconds to wait for an answer,
    and on a stream for its next line."""

    def __init__(self, base_url: str, token: str, timeout: float = DEFAULT_TIMEOUT_S):
        self.base_url, self.token, self.timeout = base_url.rstrip("/"), token, timeout

    # -- runs --------------------------------------------------------------------

    def run_sync(self, definition: dict, payload: dict | None = None, **fields: Any) -> dict:
        """Run a workflow and wait for its answer (``POST /v1/runs/sync``). ``fields``
        are the request's other fields by their API names: ``propValues``, ``runId``,
        ``timeoutMs``."""
        return self._json("POST", "/v1/runs/sync", _run_body(definition, payload, fields))

    def stream(self, definition: dict, payload: dict | None = None,
               **fields: Any) -> EventStream:
        """Run a workflow and receive its events as they happen: ``run.started``,
        ``node.started``, ``node.retrying``, ``node.finished``, then ``run.finished``
        with the answer. An error before the run starts raises here."""
        return self._events("POST", "/v1/runs/sync", _run_body(definition, payload, fields))

    def start(self, definition: dict, payload: dict | None = None, **fields: Any) -> str:
        """Start a run without waiting for it (``POST /v1/runs``): its ``runId``."""
        return self._json("POST", "/v1/runs", _run_body(definition, payload, fields))["runId"]

    def follow(self, run_id: str) -> EventStream:
        """A run's events: what happened so far at once, then the rest as it happens, to
        ``run.finished`` (at once for a finished run)."""
        return self._events("GET", f"/v1/runs/{_quoted(run_id)}/stream")

    def get(self, run_id: str) -> dict:
        """A run: its answer once finished, its state so far while running."""
        return self._json("GET", f"/v1/runs/{_quoted(run_id)}")

    def cancel(self, run_id: str) -> dict:
        """Stop a run in flight: its answer (``status: "cancelled"``) once it has stopped,
        or ``{runId, status: "running", cancelRequested: true}`` if that takes longer than
        the server waits. A finished run raises ``ApiError`` 409."""
        return self._json("POST", f"/v1/runs/{_quoted(run_id)}/cancel")

    def list(self, status: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> dict:
        """One page of the token's runs, newest first: ``{runs, nextCursor}``; pass
        ``nextCursor`` as ``cursor`` for the next page (None after the last)."""
        query = {"status": status, "limit": limit, "cursor": cursor}
        return self._json("GET", "/v1/runs", query={k: v for k, v in query.items()
                                                    if v is not None})

    def runs(self, status: str | None = None, page_size: int | None = None) -> Iterator[dict]:
        """Every run of the token, newest first, page after page as they are read."""
        cursor = None
        while True:
            page = self.list(status, page_size, cursor)
            yield from page["runs"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    # -- the rest ----------------------------------------------------------------

    def balance(self) -> dict:
        """The token's compute units: ``{balance, reserved, used}``."""
        return self._json("GET", "/v1/balance")

    def validate(self, definition: dict, payload: dict | None = None, **fields: Any) -> dict:
        """Every check of a run, nothing run or charged: ``{valid, nodeCount, levels,
        loops}``; an invalid request raises ``ApiError`` 400."""
        return self._json("POST", "/v1/workflows/validate",
                          _run_body(definition, payload, fields))

    def node_types(self) -> list[dict]:
        """Every node type with the JSON Schemas of its payload and result."""
        return self._json("GET", "/v1/node-types")["nodeTypes"]

    # -- HTTP --------------------------------------------------------------------

    def _json(self, method: str, path: str, body: dict | None = None,
              query: dict | None = None) -> Any:
        with self._open(method, path, body, query, "application/json") as response:
            return json.loads(response.read())

    def _events(self, method: str, path: str, body: dict | None = None) -> EventStream:
        return EventStream(self._open(method, path, body, None, "text/event-stream"))

    def _open(self, method: str, path: str, body: dict | None, query: dict | None,
              accept: str):
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            with error:
                raise _api_error(error) from None


def _run_body(definition: dict, payload: dict | None, fields: dict[str, Any]) -> dict:
    body = {"definition": definition, **fields}
    if payload is not None:
        body["payload"] = payload
    return body


def _quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    """An error answer as ``ApiError``; a body that is not the service's JSON (a proxy's
    page) becomes its message."""
    text = error.read()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": text.decode("utf-8", "replace").strip()[:1000] or str(error.reason)}
    retry_after = error.headers.get("Retry-After", "")
    return ApiError(error.code, body, float(retry_after) if retry_after.isdigit() else None)
