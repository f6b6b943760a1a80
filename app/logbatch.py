"""A run's log lines, held while it runs and written together at its end.

``batched()`` wraps a run; ``Batching`` wraps each of the app's handlers (its
sink) and, inside ``batched``, holds the lines it is handed instead of writing
them. A run's lines reach a sink in writes of at most ``flush_bytes(sink)``:
formatted once, joined, and handed to the sink's ``write_text`` (``logsinks``),
which writes them as they are, with no record made for them.

``info`` is ``Logger.info`` for the lines the app logs in every run (a ``log``
node's, the run's summary): inside ``batched``, when every handler the line would
reach is a ``Batching`` one, it makes the line from its fields with the same
formatter (``JsonFormatter.line``: the text a record would have) and holds it, with
no record made and no handler called; else it calls ``Logger.info``.
"""
from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
from typing import Any

from .logformat import _STANDARD, JsonFormatter

FLUSH_BYTES = 1024 * 1024


def flush_bytes(sink: logging.Handler) -> int:
    """The most a run's lines may take in one write to ``sink``: well under its
    rotation size, so a run that logs much still lets the file rotate."""
    rotation = getattr(sink, "maxBytes", 0)
    return min(FLUSH_BYTES, rotation // 4) if rotation > 0 else FLUSH_BYTES


class _Batch:
    """The lines of one run per sink, written when they reach the sink's
    ``flush_bytes`` and when the run ends: ``batched``'s context manager (a class's
    ``__enter__`` and ``__exit__`` cost a run less than a ``contextlib`` generator's)."""

    def __init__(self):
        # Held while writing too: the writes of one sink keep the lines' order.
        self._lock = threading.Lock()
        self._held: dict[Batching, _Lines] | None = {}
        self._token: contextvars.Token | None = None

    def __enter__(self) -> None:
        self._token = _batch.set(self)

    def __exit__(self, *exc_info: object) -> None:
        _batch.reset(self._token)
        self.write()

    def add(self, handlers: tuple[Batching, ...] | list[Batching], level: int, line: str
            ) -> bool:
        """Hold ``line`` (a record's, of ``level``) for each of ``handlers``' sinks; False
        once the run has ended (write it now)."""
        size = 1 + (len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass")))
        with self._lock:
            if self._held is None:
                return False
            for handler in handlers:
                held = self._held.get(handler)
                if held is None:
                    held = self._held[handler] = _Lines()
                elif held.size + size > handler.flush_bytes:  # it holds a line at least
                    handler.write(held)
                    self._held[handler] = held = _Lines()
                held.lines.append(line)
                held.size += size
                if level > held.level:
                    held.level = level
            return True

    def write(self) -> None:
        """Write what is held, and the lines logged from now on at once."""
        with self._lock:
            held, self._held = self._held or {}, None
            for handler, lines in held.items():
                handler.write(lines)


class _Lines:
    """A sink's lines held: their text, size in bytes (newlines included), top level."""

    __slots__ = ("level", "lines", "size")

    def __init__(self):
        self.lines: list[str] = []
        self.size = self.level = 0

    def record(self, text: str) -> logging.LogRecord:
        """One record whose formatted text is ``text``, these lines joined (for a sink
        without ``write_text``)."""
        return logging.makeLogRecord({
            "name": "app", "msg": text, "levelno": self.level,
            "levelname": logging.getLevelName(self.level),
            "_json": text})  # logformat.JsonFormatter's cache: the lines as they are


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("log_batch",
                                                                       default=None)


def batched() -> _Batch:
    """Write the lines logged meanwhile (node threads' too) in one go at the end.

    A run logs a line per ``log`` node and its summary line; written together,
    they cost one lock of the shared file and one write instead of one each, and
    stay next to each other in the file. A run that logs more than a sink's
    ``flush_bytes`` is written in several such writes, in order, each of whole
    lines. A line logged after the end (a node thread that outlived its run) is
    written at once.
    """
    return _Batch()


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
        if not batch.add((self,), record.levelno, self.sink.format(record)):
            self.sink.handle(record)

    def write(self, held: _Lines) -> None:
        """Write ``held`` to the sink: the joined lines in one write where it can."""
        text = "\n".join(held.lines)
        write_text = getattr(self.sink, "write_text", None)
        if write_text is not None:
            write_text(text)
        else:
            self.sink.handle(held.record(text))


def info(logger: logging.Logger, message: str, extra: dict[str, Any]) -> None:
    """``logger.info(message, extra=extra)``: the same line, held without a record where
    it can be (see the module's docstring)."""
    if not _held(logger, logging.INFO, message, extra):
        logger.info(message, extra=extra, stacklevel=2)


def _held(logger: logging.Logger, level: int, message: str, extra: dict[str, Any]) -> bool:
    """Hold the line ``logger.log(level, message, extra=extra)`` would write, as it would:
    True when done, False when the record's way must do it (no batch; a handler, filter
    or logger class not ours; a key ``makeRecord`` refuses; a value that fails)."""
    batch = _batch.get()
    if (batch is None or type(logger) is not logging.Logger or logger.filters
            or not logger.isEnabledFor(level) or not _STANDARD.isdisjoint(extra)
            or logging.getLogRecordFactory() is not logging.LogRecord):
        return False
    handlers = []  # the handlers Logger.callHandlers would call, in its order
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if (type(handler) is not Batching or handler.filters
                    or type(handler.sink.formatter) is not JsonFormatter
                    or type(handler.sink).format is not logging.Handler.format):
                return False
            if level >= handler.level:
                handlers.append(handler)
        node = node.parent if node.propagate else None
    if not handlers:
        return False
    created, msecs = _created()
    try:  # the first sink formats, the others take its text: as with a record
        line = handlers[0].sink.formatter.line(
            created, msecs, logging.getLevelName(level), logger.name, str(message),
            os.getpid() if logging.logProcesses else None, extra.get("requestId"), extra)
    except Exception:  # reported the record's way (Handler.handleError)
        return False
    return batch.add(handlers, level, line)


# A LogRecord's creation time, as LogRecord.__init__ of this Python reckons it.
if sys.version_info >= (3, 13):
    def _created() -> tuple[float, float]:
        ns = time.time_ns()
        created, msecs = ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0
        if msecs == 999.0 and int(created) != ns // 1_000_000_000:
            msecs = 0.0
        return created, msecs
else:
    def _created() -> tuple[float, float]:
        created = time.time()
        return created, int((created - int(created)) * 1000) + 0.0
