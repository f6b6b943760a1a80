"""A run's log lines, held while it runs and written together at its end.

``batched()`` wraps a run; ``Batching`` wraps each of the app's handlers (its
sink) and, inside ``batched``, holds the lines it is handed instead of writing
them. A run's lines reach a sink in writes of at most ``flush_bytes(sink)``:
formatted once, joined, and handed to the sink's ``write_text`` (``logsinks``),
which writes them as they are, with no record made for them.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator

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
                handler.write(held)
                self._held[handler] = held = _Lines()
            held.lines.append(line)
            held.size += size
            held.level = max(held.level, record.levelno)
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

    def write(self, held: _Lines) -> None:
        """Write ``held`` to the sink: the joined lines in one write where it can."""
        text = "\n".join(held.lines)
        write_text = getattr(self.sink, "write_text", None)
        if write_text is not None:
            write_text(text)
        else:
            self.sink.handle(held.record(text))

