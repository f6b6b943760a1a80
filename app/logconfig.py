"""JSON-lines logging for the app and gunicorn, set up once per process.

Every record carries the request id of the request it belongs to (a context
variable that the engine copies into node threads). Handlers are created in
the process that uses them, after gunicorn's fork: concurrent-log-handler
locks the shared file so lines from several workers never interleave.

Sizes are bounded (SPEC §3): a line is at most ``LOG_LINE_MAX_BYTES`` of
UTF-8 (its longest values cut and marked ``…[truncated]``, after redaction),
and a run's lines reach a sink in writes of at most ``flush_bytes(sink)``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.config
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import config
from .redact import REDACTED, Redactor, is_secret_key
from .redact import current as redactor  # the name the API sets it by

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
_NO_SECRETS = Redactor()

LINE_MAX_BYTES = config.default("LOG_LINE_MAX_BYTES")
TRUNCATED = "…[truncated]"
# Fields a cut never touches (short, and what a reader sorts and filters by).
_KEPT = ("ts", "level", "pid")

# Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, requestId, extras."""

    def __init__(self, line_max_bytes: int = LINE_MAX_BYTES):
        super().__init__()
        self.line_max_bytes = line_max_bytes

    def format(self, record: logging.LogRecord) -> str:
        # Each handler (stdout, the file) formats the record: write it once.
        cached = record.__dict__.get("_json")
        if cached is None:
            cached = record.__dict__["_json"] = self._format(record)
        return cached

    def _format(self, record: logging.LogRecord) -> str:
        redact = redactor.get() or _NO_SECRETS
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact.text(record.getMessage()),
            "pid": record.process,
        }
        rid = getattr(record, "requestId", None) or request_id.get()
        if rid:
            entry["requestId"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = REDACTED if is_secret_key(key) else redact.value(value)
        if record.exc_info:
            entry["exception"] = redact.text(self.formatException(record.exc_info))
        # The bound is in bytes of the UTF-8 line, what the file receives.
        line = json.dumps(entry, default=str, ensure_ascii=False)
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


FLUSH_BYTES = 1024 * 1024


def flush_bytes(sink: logging.Handler) -> int:
    """The most a run's lines may take in one write to ``sink``: well under its
    rotation size, so a run that logs much still lets the file rotate."""
    rotation = getattr(sink, "maxBytes", 0)
    return min(FLUSH_BYTES, rotation // 4) if rotation > 0 else FLUSH_BYTES


class _Batch:
    """The lines of one run per sink, written when they reach the sink's
    ``flush_bytes`` and when the run ends (``batched``)."""

    def __init__(self):
        # Held while writing too: the writes of one sink keep the lines' order.
        self._lock = threading.Lock()
        self._held: dict[Batching, _Lines] | None = {}

    def add(self, handler: Batching, record: logging.LogRecord, line: str) -> bool:
        """Hold ``record`` (formatted: ``line``) for ``handler``'s sink; False once the run
        has ended (write it now)."""
        size = 1 + (len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass")))
        with self._lock:
            if self._held is None:
                return False
            held = self._held.get(handler)
            if held is None:
                held = self._held[handler] = _Lines()
            elif held.size + size > handler.flush_bytes:  # it holds a line at least
                handler.sink.handle(held.record("\n".join(held.lines)))
                self._held[handler] = held = _Lines()
            held.lines.append(line)
            held.size += size
            held.level = max(held.level, record.levelno)
            return True

    def write(self) -> None:
        """Write what is held, and the lines logged from now on at once."""
        with self._lock:
            held, self._held = self._held or {}, None
            batches: dict[str, logging.LogRecord] = {}  # the sinks share a formatter: one each
            for handler, lines in held.items():
                text = "\n".join(lines.lines)
                if text not in batches:
                    batches[text] = lines.record(text)
                handler.sink.handle(batches[text])


class _Lines:
    """A sink's lines held: their text, size in bytes (newlines included), top level."""

    __slots__ = ("level", "lines", "size")

    def __init__(self):
        self.lines: list[str] = []
        self.size = self.level = 0

    def record(self, text: str) -> logging.LogRecord:
        """One record whose formatted text is ``text``, these lines joined."""
        return logging.makeLogRecord({
            "name": "app", "msg": text, "levelno": self.level,
            "levelname": logging.getLevelName(self.level),
            "_json": text})  # JsonFormatter's cache: the lines as they are


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("log_batch",
                                                                       default=None)


@contextlib.contextmanager
def batched() -> Iterator[None]:
    """Write the lines logged meanwhile (node threads' too) in one go at the end.

    A run logs a line per ``log`` node and its summary line; written together,
    they cost one lock of the shared file and one write instead of one each, and
    stay next to each other in the file. A run that logs more than a sink's
    ``flush_bytes`` is written in several such writes, in order, each of whole
    lines. A line logged after the end (a node thread that outlived its run) is
    written at once.
    """
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
        batch.write()


class Batching(logging.Handler):
    """Hands records to ``sink``, or, inside ``batched``, holds them for it."""

    def __init__(self, sink: logging.Handler):
        super().__init__(sink.level)
        self.sink = sink
        self.flush_bytes = flush_bytes(sink)

    def emit(self, record: logging.LogRecord) -> None:
        batch = _batch.get()
        if batch is None:
            self.sink.handle(record)
            return
        # Formatted now, in the logging thread: the run's redactor applies to it.
        if not batch.add(self, record, self.sink.format(record)):
            self.sink.handle(record)


def config_dict(settings: Mapping[str, Any]) -> dict:
    """The one logging dict, for the app (and gunicorn's own loggers)."""
    handlers: dict[str, dict] = {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json",
                   "stream": "ext://sys.stdout"},
    }
    path = settings.get("LOG_FILE")
    rotation = settings.get("LOG_MAX_BYTES", config.default("LOG_MAX_BYTES")) if path else 0
    if path:
        handlers["file"] = {
            "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
            "formatter": "json", "filename": path, "encoding": "utf-8",
            "maxBytes": rotation,
            "backupCount": settings.get("LOG_BACKUPS", config.default("LOG_BACKUPS")),
        }
    line_max = settings.get("LOG_LINE_MAX_BYTES", LINE_MAX_BYTES)
    if rotation > 0:  # not even one line may be a write larger than the rotation size
        line_max = min(line_max, rotation)
    level = settings.get("LOG_LEVEL", config.default("LOG_LEVEL"))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "line_max_bytes": line_max}},
        "handlers": handlers,
        "loggers": {
            "app": {"level": level, "handlers": list(handlers), "propagate": False},
            "gunicorn.error": {"level": "INFO", "handlers": list(handlers),
                               "propagate": False},
        },
    }


_configured: tuple | None = None  # the settings this process's handlers were made from


def _reset_after_fork() -> None:
    global _configured
    _configured = None  # the parent's handlers: a forked child makes its own


os.register_at_fork(after_in_child=_reset_after_fork)


def configure(settings: Mapping[str, Any]) -> None:
    """Install the handlers in this process: once, again after a fork or a change."""
    global _configured
    path = settings.get("LOG_FILE")
    key = (path, settings.get("LOG_LEVEL"), settings.get("LOG_MAX_BYTES"),
           settings.get("LOG_LINE_MAX_BYTES"))
    if _configured == key:
        return
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # A line holds none of the caller's file and line, thread or process names:
    # skip collecting them for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    logging.config.dictConfig(config_dict(settings))
    app_log = logging.getLogger("app")
    app_log.handlers = [Batching(sink) for sink in app_log.handlers]
    _configured = key
