"""JSON-lines logging for the app and gunicorn, set up once per process.

Every record carries the request id of the request it belongs to (a context
variable that the engine copies into node threads). Handlers are created in
the process that uses them, after gunicorn's fork: concurrent-log-handler
locks the shared file so lines from several workers never interleave.
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
from collections.abc import Iterator, Mapping
from typing import Any

from .redact import REDACTED, Redactor, is_secret_key

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
# The running workflow's redactor (its sensitive prop values), set by the API.
redactor: contextvars.ContextVar[Redactor | None] = contextvars.ContextVar("redactor",
                                                                           default=None)
_NO_SECRETS = Redactor()

# Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, requestId, extras."""

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
        line = json.dumps(entry, default=str, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (valid in JSON text): keep it escaped
            line = json.dumps(entry, default=str)
        return line


class _Batch:
    """The lines of one run per sink, until the run ends (``batched``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._lines: dict[logging.Handler, list[logging.LogRecord]] | None = {}

    def add(self, sink: logging.Handler, record: logging.LogRecord) -> bool:
        """Hold ``record`` for ``sink``; False once the run has ended (write it now)."""
        with self._lock:
            if self._lines is None:
                return False
            self._lines.setdefault(sink, []).append(record)
            return True

    def write(self) -> None:
        with self._lock:
            held, self._lines = self._lines or {}, None
        batches: dict[str, logging.LogRecord] = {}  # the sinks share a formatter: one each
        for sink, records in held.items():
            text = "\n".join(sink.format(record) for record in records)
            if text not in batches:
                level = max(record.levelno for record in records)
                batches[text] = logging.makeLogRecord({
                    "name": "app", "msg": text, "levelno": level,
                    "levelname": logging.getLevelName(level),
                    "_json": text})  # JsonFormatter's cache: the lines as they are
            sink.handle(batches[text])


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("log_batch",
                                                                       default=None)


@contextlib.contextmanager
def batched() -> Iterator[None]:
    """Write the lines logged meanwhile (node threads' too) in one go at the end.

    A run logs a line per ``log`` node and its summary line; written together,
    they cost one lock of the shared file and one write instead of one each, and
    stay next to each other in the file. A line logged after the end (a node
    thread that outlived its run) is written at once.
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

    def emit(self, record: logging.LogRecord) -> None:
        batch = _batch.get()
        if batch is None:
            self.sink.handle(record)
            return
        # Formatted now, in the logging thread: the run's redactor applies to it.
        self.sink.format(record)
        if not batch.add(self.sink, record):
            self.sink.handle(record)


def config_dict(settings: Mapping[str, Any]) -> dict:
    """The one logging dict, for the app (and gunicorn's own loggers)."""
    handlers: dict[str, dict] = {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json",
                   "stream": "ext://sys.stdout"},
    }
    path = settings.get("LOG_FILE")
    if path:
        handlers["file"] = {
            "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
            "formatter": "json", "filename": path, "encoding": "utf-8",
            "maxBytes": settings.get("LOG_MAX_BYTES", 10 * 1024 * 1024),
            "backupCount": settings.get("LOG_BACKUPS", 5),
        }
    level = settings.get("LOG_LEVEL", "INFO")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": handlers,
        "loggers": {
            "app": {"level": level, "handlers": list(handlers), "propagate": False},
            "gunicorn.error": {"level": "INFO", "handlers": list(handlers),
                               "propagate": False},
        },
    }


_configured: tuple | None = None


def configure(settings: Mapping[str, Any]) -> None:
    """Install the handlers in this process: once, again after a fork or a change."""
    global _configured
    path = settings.get("LOG_FILE")
    key = (os.getpid(), path, settings.get("LOG_LEVEL"))
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
