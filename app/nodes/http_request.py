"""``http-request``: one outbound HTTP request (SPEC §5); the guard rails are in ``outbound``."""
from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from marshmallow import ValidationError, validate

from .. import outbound
from ..dialect import Any_, Bool, Int, Obj, Str
from ..jsonread import loads_strict
from ..jstext import to_text
from ..ticks import every
from ..version import __version__
from .base import NodeContext, NodeError, NodeType, PayloadSchema, result_object

MIB = 1024 * 1024
MAX_TIMEOUT_MS = 60_000
MAX_HOPS = 5
MAX_JSON_DEPTH = 64  # deeper documents stay text: the run record must stay serializable
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
USER_AGENT = f"workflow-runner/{__version__}"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 header name
_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # booleans are ints


def check_method(value: str) -> None:
    """Validator: one of ``METHODS``, in any case."""
    if value.upper() not in METHODS:
        raise ValidationError(f"Must be one of: {', '.join(METHODS)}.")


def check_headers(value: dict) -> None:
    """Validator: header names are tokens; values are strings, numbers or booleans."""
    for name, item in value.items():
        if not _TOKEN.fullmatch(name):
            raise ValidationError(f"Invalid header name {name!r}.")
        if not _scalar(item):
            raise ValidationError(f"Header {name!r} must be a string.")
        if any(c in to_text(item) for c in "\r\n\0"):
            raise ValidationError(f"Header {name!r} must not contain line breaks.")


def check_query(value: dict) -> None:
    """Validator: query values are scalars, null (left out) or arrays of them."""
    for name, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not all(i is None or _scalar(i) for i in items):
            raise ValidationError(f"Query parameter {name!r} must be a scalar or an array.")


class Payload(PayloadSchema):
    url = Str(required=True)
    method = Str(load_default="GET", validate=check_method)
    headers = Obj(load_default=dict, validate=check_headers)
    query = Obj(load_default=dict, validate=check_query)
    body = Any_(load_default=None)
    timeout = Int(load_default=30_000, validate=validate.Range(1, MAX_TIMEOUT_MS))
    followRedirects = Bool(load_default=True)
    maxResponseSize = Int(load_default=5 * MIB, validate=validate.Range(0, 10 * MIB))
    failOnStatus = Bool(load_default=False)


def run(data: dict, ctx: NodeContext) -> dict:
    """Send the request; describe the final response."""
    method = data["method"].upper()
    url = with_query(data["url"], data["query"], ctx.check)
    headers = request_headers(data["headers"], ctx.check)
    body = encode_body(data["body"], headers)
    ctx.check()
    response = outbound.request(
        method, url, headers, body, timeout=ctx.time_left(),
        follow_redirects=data["followRedirects"], max_hops=MAX_HOPS,
        max_size=data["maxResponseSize"], allow_list=ctx.settings.get("OUTBOUND_ALLOW", []),
        cancelled=ctx.cancelled)
    status, host = response.status, outbound.parse_url(url).host
    ctx.logger.info("outbound request", extra={
        "runId": ctx.run_id, "nodeId": ctx.node_id, "method": method, "host": host,
        "status": status, "bytes": len(response.body)})
    if data["failOnStatus"] and not 200 <= status < 400:
        raise NodeError("HTTP_ERROR", f"{method} to {host} answered {status} {response.reason}.",
                        retryable=status in (408, 429) or status >= 500)
    ctx.check()
    content_type = response.headers.get("content-type")
    body_text = decode_text(response.body, content_type)
    return {"status": status, "statusText": response.reason, "headers": response.headers,
            "body": body_text, "contentType": content_type,
            "json": parse_json(body_text, ctx.check)}


def with_query(url: str, query: dict, check: Callable[[], None] = lambda: None) -> str:
    """``url`` with ``query`` merged in; its keys replace the same keys already there.

    ``check`` is called every ``ticks.CHECK_EVERY`` items (``NodeContext.check``).
    """
    outbound.parse_url(url)  # INVALID_INPUT before anything else happens
    if not query:
        return url
    parts = urlsplit(url.strip())
    kept = [p for p in every(parts.query.split("&"), check)
            if p and unquote_plus(p.split("=", 1)[0]) not in query]
    added = [f"{_quoted(name, name)}={_quoted(to_text(item), name)}"
             for name, item in every(_pairs(query), check)]
    return urlunsplit(parts._replace(query="&".join(kept + added)))


def _quoted(value: str, name: str) -> str:
    return quote(outbound.check_text(value, f"Query parameter {name!r}"), safe="")


def _pairs(query: dict) -> Iterator[tuple[str, Any]]:
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                yield name, item


def request_headers(headers: dict, check: Callable[[], None] = lambda: None) -> dict[str, str]:
    """The caller's headers as text (SPEC §4), with our User-Agent unless they chose one.

    A value must be Latin-1 text (what HTTP/1.1 can carry): INVALID_INPUT
    naming the header otherwise, before anything is sent.
    """
    out = {name: _header_value(name, to_text(value))
           for name, value in every(headers.items(), check)}
    if not any(name.lower() == "user-agent" for name in out):
        out["User-Agent"] = USER_AGENT
    return out


def _header_value(name: str, value: str) -> str:
    outbound.check_text(value, f"Header {name!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as error:
        raise NodeError("INVALID_INPUT", f"Header {name!r} can only hold Latin-1 text; "
                        f"U+{ord(value[error.start]):04X} at position {error.start} is not.",
                        False) from None
    return value


def encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The body's bytes; sets a Content-Type unless one is given.

    JSON values are serialized as ``application/json``; a string is sent as
    written, labelled ``application/json`` when it parses as JSON (a template
    like ``'{"text": "{{a.result.x}}"}'``) and ``text/plain`` otherwise.
    """
    if body is None:
        return None
    if isinstance(body, str):
        data = outbound.check_text(body, "The body").encode("utf-8")
        kind = "application/json" if _is_json(body) else "text/plain; charset=utf-8"
    else:
        written = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if outbound.unpaired(written) is not None:
            outbound.check_text(*_first_unencodable(body, "body"))
        data = written.encode("utf-8")
        kind = "application/json"
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = kind
    return data


def _first_unencodable(value: Any, path: str) -> tuple[str, str]:
    """``(text, path)`` of the first key or string in ``value`` holding a surrogate."""
    if isinstance(value, str):
        return value, path
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in pairs:
        if isinstance(key, str) and outbound.unpaired(key) is not None:
            return key, f"A key in {path}"
        if isinstance(item, (str, dict, list)) and outbound.unpaired(
                json.dumps(item, ensure_ascii=False)) is not None:
            return _first_unencodable(item, f"{path}[{key!r}]")
    raise AssertionError("called only for a value that holds a surrogate")


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def decode_text(body: bytes, content_type: str | None) -> str:
    """The body as text in its declared charset; UTF-8 (with U+FFFD) otherwise."""
    found = _CHARSET.search(content_type or "")
    try:  # an unknown charset, or a non-text codec such as "base64", falls back
        return body.decode(codecs.lookup(found.group(1)).name if found else "utf-8",
                           errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def parse_json(body_text: str, check: Callable[[], None] | None = None) -> Any:
    """The body parsed as strict JSON, or None when it is not JSON (or nests too deep);
    ``check`` stops the depth walk at the attempt's limit."""
    if not body_text.strip():
        return None
    try:
        return loads_strict(body_text.lstrip("\ufeff"), MAX_JSON_DEPTH, check)
    except ValueError:
        return None


NODE = NodeType(
    "http-request", Payload, run, max_timeout_ms=MAX_TIMEOUT_MS, timeout_field="timeout",
    result=result_object({"status": {"type": "integer"}, "statusText": {"type": "string"},
                          "headers": {"type": "object"}, "body": {"type": "string"},
                          "contentType": {"type": ["string", "null"]}, "json": {}}))
