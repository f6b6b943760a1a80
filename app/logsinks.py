"""The app's two sinks, stdout and the shared log file, each with ``write_text``: a
run's lines, formatted and joined (``logbatch``), written with one write.

The file is concurrent-log-handler's (every writer of it must be: the same lock
file, the same rotation). For a record, its ``emit`` stats the file under the lock
(rotated by another worker?), flushes, seeks and tells its stream (the size),
writes through a text stream and flushes it. ``write_text`` takes the same lock
and does only what the lines need: one ``stat`` (rotated? its size) and one
``os.write`` of the encoded lines. Other records (gunicorn's own lines) go
through ``emit`` as before, and are written with ``os.write`` too.
"""
from __future__ import annotations

import fcntl
import logging
import os

import concurrent_log_handler


def _failed(sink: logging.Handler, text: str) -> None:
    """A write of ``text`` that failed, reported as ``emit``'s failures are."""
    sink.handleError(logging.makeLogRecord({"name": "app", "msg": text}))


class StreamHandler(logging.StreamHandler):
    """stdout: the standard handler, with ``write_text``."""

    def write_text(self, text: str) -> None:
        """Write ``text`` (whole formatted lines) and a terminator, and flush."""
        try:
            with self.lock:
                stream = self.stream
                stream.write(text + self.terminator)
                if hasattr(stream, "flush"):  # once per run's lines: flush()'s, in its lock
                    stream.flush()
        except RecursionError:  # as emit: see logging.StreamHandler.emit
            raise
        except Exception:
            _failed(self, text)


class ConcurrentRotatingFileHandler(concurrent_log_handler.ConcurrentRotatingFileHandler):
    """The shared file: the library's handler, with ``write_text``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._opened: tuple | None = None  # the stream write_text checked: (it, dev, inode)

    # The lock is the library's (its lock file, its thread lock), taken and released with
    # flock itself, as portalocker's lock and unlock do on POSIX: their flag checks and
    # dispatch cost a seventh of a run's logging.
    def _lock_stream_lock(self, stream_lock) -> None:
        if not self.is_posix:
            return super()._lock_stream_lock(stream_lock)
        fcntl.flock(stream_lock.fileno(), fcntl.LOCK_EX)

    def _do_unlock(self) -> None:
        if not (self.is_posix and self.stream_lock and self.is_locked):
            return super()._do_unlock()
        try:
            fcntl.flock(self.stream_lock.fileno(), fcntl.LOCK_UN)
        finally:  # what the library's does after its unlock
            self.is_locked = False
            if not self._actual_keep_lock_file_open:
                self.stream_lock.close()
                self.stream_lock = None
            self._thread_lock.release()

    def write_text(self, text: str) -> None:
        """Append ``text`` (whole formatted lines) with one write under the file's lock,
        first rotating the file once it holds ``maxBytes``."""
        try:
            self._do_lock()
            try:
                size = self._current()  # first: the stream is the file's, reopened if not
                if 0 < self.maxBytes <= size:
                    self.doRollover()
                self.do_write(text)
            finally:
                self._do_unlock()
        except Exception:
            _failed(self, text)

    def do_write(self, msg: str) -> None:
        """Append ``msg`` and a terminator with one ``os.write`` (the lock is held)."""
        data = msg + self.terminator
        try:
            data = data.encode(self.encoding or "utf-8")
        except UnicodeError:  # as the library's: by its policy (or fail)
            data = data.encode(self.encoding or "utf-8", self.unicode_error_policy)
        if self.stream is None or self.stream.closed:
            self.stream = self.do_open()
        fd = self.stream.fileno()
        while data:  # a regular file takes it whole; a short write goes on
            data = data[os.write(fd, data):]
        if not self._actual_keep_log_stream_open:  # Windows: as the library's, close it
            self._close()

    def _current(self) -> int:
        """The size of the file now at ``baseFilename``; ``stream`` is that file, reopened
        when another worker rotated it away or it was deleted."""
        opened, stream = self._opened, self.stream
        try:
            now = os.stat(self.baseFilename)
        except OSError:  # gone: it is created anew
            now = None
        if (now is not None and opened is not None and opened[0] is stream
                and not stream.closed and (now.st_dev, now.st_ino) == opened[1:]):
            return now.st_size
        if stream is not None and not stream.closed:
            stream.close()
        self.stream = stream = self.do_open()
        now = os.fstat(stream.fileno())
        self._opened = (stream, now.st_dev, now.st_ino)
        return now.st_size
