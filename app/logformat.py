"""A log record as one JSON line: redacted, tagged with its request, bounded in size.

Every record carries the request id of the request it belongs to (a context
variable that the engine copies into node threads), and its text goes through
the redactor of the run it belongs to (``redactor``, set by the API).

Sizes are bounded (SPEC §3): a line is at most ``LOG_LINE_MAX_BYTES`` of
UTF-8, its longest values cut and marked ``…[truncated]``, after redaction.
"""
from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from . import config
from .redact import REDACTED, Redactor, is_secret_key
from .redact import current as redactor  # the name the API sets it by

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
_NO_SECRETS = Redactor()
_SCALARS = frozenset((str, int, float, bool, type(None)))  # a keys-only redactor keeps
_FLAT = frozenset((str, int, bool, type(None)))  # values orjson writes as json does (_dumps)

LINE_MAX_BYTES = config.default("LOG_LINE_MAX_BYTES")
TRUNCATED = "…[truncated]"
# Fields a cut never touches (short, and what a reader sorts and filters by).
_KEPT = ("ts", "level", "pid")

# Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# json.dumps(entry, default=str, ensure_ascii=False) makes an encoder for every line: a
# third of a line's cost. Its C encoder, made once with the same arguments, writes the
# same text (no circular check: a line's values are a log call's, and a circular one
# still fails, with a RecursionError rather than a ValueError).
_C_ENCODER = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, str, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, requestId, extras."""

    def __init__(self, line_max_bytes: int = LINE_MAX_BYTES):
        super().__init__()
        self.line_max_bytes = line_max_bytes
        self._second: tuple[int, str] = (-1, "")  # the last ts's second, and its text

    def format(self, record: logging.LogRecord) -> str:
        # Each handler (stdout, the file) formats the record: write it once.
        cached = record.__dict__.get("_json")
        if cached is None:
            cached = record.__dict__["_json"] = self._format(record)
        return cached

    def _format(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.msecs, record.levelname, record.name,
                         record.getMessage(), record.process,
                         getattr(record, "requestId", None), vars(record), record.exc_info)

    def line(self, created: float, msecs: float, level: str, name: str, message: str,
             pid: int | None, rid: str | None, fields: dict[str, Any],
             exc_info: Any = None) -> str:
        """The line of a record with these attributes (``fields``: all of them, or only a
        log call's ``extra``; the standard ones are skipped): the one implementation of
        a line, for a record and for a line held without one (``logbatch.info``)."""
        redact = redactor.get() or _NO_SECRETS
        # Most runs have no sensitive values, and a line outside a run (a run's summary)
        # none: only secret keys are redacted, a scalar and the message are kept as is.
        kept = _SCALARS if redact.keys_only else ()
        second, second_text = self._second
        if second != int(created):  # most lines fall in the second of the last one
            second = int(created)
            second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second, second_text
        millis = int(msecs)
        entry: dict[str, Any] = {
            "ts": second_text + (_MILLIS[millis] if 0 <= millis < 1000 else f".{millis:03d}Z"),
            "level": level,
            "logger": name,
            "message": message if kept else redact.text(message),
            "pid": pid,
        }
        rid = rid or request_id.get()
        if rid:
            entry["requestId"] = rid
        kinds = _KINDS
        for key, value in fields.items():
            kind = kinds.get(key)
            if kind is None:
                kind = _kind(key)
            if kind and key not in entry:
                entry[key] = (REDACTED if kind == _SECRET else
                              value if type(value) in kept else redact.value(value))
        if exc_info:
            entry["exception"] = redact.text(self.formatException(exc_info))
        # The bound is in bytes of the UTF-8 line, what the file receives.
        line = _dumps(entry)
        escaped = False
        if line.isascii():  # most lines (a flag of the string): a byte a character
            size = len(line)
        else:
            try:
                size = len(line.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate (valid in JSON text): escape it
                line = json.dumps(entry, default=str)
                size, escaped = len(line), True
        if size > self.line_max_bytes:  # values were redacted above: now cut them
            line = _cut_line(entry, self.line_max_bytes, escaped)
        return line


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))  # a ts's end, looked up

# What a line does with a record's attribute, by its name: _SKIPPED (a standard or
# private one), _SECRET (its value redacted) or _FIELD; the same names in every line.
_SKIPPED, _SECRET, _FIELD = 0, 1, 2
_KINDS: dict[str, int] = {}


def _kind(key: str) -> int:
    kind = (_SKIPPED if key in _STANDARD or key.startswith("_") else
            _SECRET if is_secret_key(key) else _FIELD)
    if len(_KINDS) < 4096:
        _KINDS[key] = kind
    return kind


def _dumps(entry: dict[str, Any]) -> str:
    """``json.dumps(entry, default=str, ensure_ascii=False)``: the same text.

    A line whose values are all strings, ints, booleans or None (a run's own lines) is
    orjson's, in 60 % of the C encoder's instructions (orjson's own part: a sixth):
    indented, its items are one a line, ``"key": value``, and a JSON string holds no raw
    newline, so joining them with ", " gives json's text. orjson refuses a lone
    surrogate and an int past 64 bits: those lines are json's. A float is left to json
    (orjson writes a small one differently), and so is any container (indented on more
    lines) or other type."""
    if _FLAT.issuperset(map(type, entry.values())):
        try:
            text = orjson.dumps(entry, option=orjson.OPT_INDENT_2)
        except orjson.JSONEncodeError:
            pass
        else:  # b'{\n  "ts": "…",\n  "level": "INFO"\n}' (or b'{}': "{}" too)
            return "{" + text[4:-2].decode().replace(",\n  ", ", ") + "}"
    if _C_ENCODER is None:  # a Python without json's C part
        return json.dumps(entry, default=str, ensure_ascii=False)
    return "".join(_C_ENCODER(entry, 0))


def _cut_line(entry: dict[str, Any], limit: int, escaped: bool) -> str:
    """``entry`` as a line of at most ``limit`` bytes: every field but ``_KEPT``
    shares what the fixed part leaves, the shortest first, so short fields
    (``requestId``, ``runId``) stay whole and only the long ones are cut.

    ``escaped``: the line is written in ASCII, as ``_format`` does for one that
    holds a lone surrogate (every character is then a byte)."""
    # A character takes a byte at least: what lies past ``limit`` is cut anyway.
    entry = {key: value[:limit + 1] if isinstance(value, str) else value
             for key, value in entry.items()}

    def dumps(value: Any) -> str:
        return json.dumps(value, default=str, ensure_ascii=escaped)

    def size(text: str) -> int:
        return len(text) if escaped else len(text.encode("utf-8"))

    values = {key: dumps(value) for key, value in entry.items() if key not in _KEPT}
    skeleton = {key: "" if key in values else value for key, value in entry.items()}
    room = limit - size(dumps(skeleton))
    cut = dict(entry)
    by_size = sorted(values, key=lambda key: len(values[key]))
    for index, key in enumerate(by_size):
        share = room // (len(by_size) - index)
        cost = size(values[key]) - 2  # its text beyond the skeleton's ""
        if cost > share:
            value = entry[key]
            cut[key] = _prefix(value if isinstance(value, str) else values[key], share,
                               lambda text: size(dumps(text)) - 2)
            cost = size(dumps(cut[key])) - 2
        room -= cost
    if room >= 0:
        return dumps(cut)
    # So many fields that their names alone do not fit: keep only the main ones.
    main = {key: entry[key] for key in ("ts", "level", "logger", "message", "pid", "requestId")
            if key in entry}
    if len(main) == len(entry):
        return dumps(cut)  # a limit below any line's size: the nearest we can do
    main["message"] = f"{main.get('message', '')} {TRUNCATED}"
    return _cut_line(main, limit, escaped)


def _prefix(text: str, budget: int, cost: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` that, marked, costs at most ``budget``."""
    low, high = 0, min(len(text), budget)  # every character costs at least one byte
    while low < high:  # a binary search: an escape or a wide character costs more than one
        middle = (low + high + 1) // 2
        if cost(text[:middle] + TRUNCATED) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low] + TRUNCATED
