"""Logging set up once per process, for the app and gunicorn: one dict config.

Handlers are created in the process that uses them, after gunicorn's fork:
concurrent-log-handler locks the shared file so lines from several workers
never interleave. Each of the app's handlers writes JSON lines
(``logformat``) and is wrapped so that a run's lines are written together
(``logbatch``), in one write to each sink (``logsinks``).

The rest of the app reaches logging through this module: ``request_id`` and
``redactor`` (what a line carries), ``batched`` (a run's lines in one write), ``info``
(``Logger.info`` for a run's own lines: held without a record inside ``batched``).
"""
from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Mapping
from typing import Any

from . import config
from .logbatch import Batching, batched, info
from .logformat import LINE_MAX_BYTES, JsonFormatter, redactor, request_id

__all__ = ["JsonFormatter", "batched", "config_dict", "configure", "info", "redactor",
           "request_id"]


def config_dict(settings: Mapping[str, Any], command: bool = False) -> dict:
    """The one logging dict, for the app (and gunicorn's own loggers). ``command``: for
    an operator's command, whose lines go to stderr only (its stdout is its output; the
    log file may belong to the service's user, whom the command needs not be)."""
    if command:
        handlers: dict[str, dict] = {
            "stderr": {"class": "app.logsinks.StreamHandler", "formatter": "json",
                       "stream": "ext://sys.stderr"}}
    else:
        handlers = {"stdout": {"class": "app.logsinks.StreamHandler", "formatter": "json",
                               "stream": "ext://sys.stdout"}}
    path = None if command else settings.get("LOG_FILE")
    rotation = settings.get("LOG_MAX_BYTES", config.default("LOG_MAX_BYTES")) if path else 0
    if path:
        handlers["file"] = {
            "class": "app.logsinks.ConcurrentRotatingFileHandler",
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


def configure(settings: Mapping[str, Any], command: bool = False) -> None:
    """Install the handlers in this process: once, again after a fork or a change
    (``command``: see ``config_dict``)."""
    global _configured
    path = None if command else settings.get("LOG_FILE")
    key = (path, settings.get("LOG_LEVEL"), settings.get("LOG_MAX_BYTES"),
           settings.get("LOG_LINE_MAX_BYTES"), command)
    if _configured == key:
        return
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # A line holds none of the caller's file and line, thread or process names:
    # skip collecting them for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    logging.config.dictConfig(config_dict(settings, command))
    app_log = logging.getLogger("app")
    app_log.handlers = [Batching(sink) for sink in app_log.handlers]
    _configured = key
