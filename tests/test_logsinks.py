"""The sinks' ``write_text``: a run's lines in one write, the bytes the library's path
wrote, rotation shared with the file's other writers."""
from __future__ import annotations

import io
import json
import logging
import os
import threading

import concurrent_log_handler

from app import logsinks
from app.logformat import JsonFormatter, request_id


def records() -> list[logging.LogRecord]:
    """Records of every kind a line can be: ASCII, wider UTF-8, a lone surrogate (an
    escaped line), extras, an exception."""
    made = []
    for message, extra in (("run finished", {"runId": "run_1", "status": "success"}),
                           ("tea é 😀 / \"quoted\"\n", {"nodeId": "a"}),
                           ("a\ud800b é", {"runId": "run_2"})):
        made.append(logging.makeLogRecord({"name": "app.runs", "msg": message,
                                           "levelno": logging.INFO, "levelname": "INFO",
                                           **extra}))
    try:
        raise ValueError("boom")
    except ValueError:
        made.append(logging.getLogger("app.test").makeRecord(
            "app.test", logging.ERROR, "(unknown file)", 0, "failed %s", ("x",),
            __import__("sys").exc_info()))
    return made


def formatted(formatter: JsonFormatter) -> tuple[list[logging.LogRecord], str]:
    token = request_id.set("req-1")
    try:
        made = records()
        return made, "\n".join(formatter.format(record) for record in made)
    finally:
        request_id.reset(token)


def test_the_file_gets_the_bytes_the_librarys_emit_wrote(tmp_path):
    formatter = JsonFormatter()
    made, text = formatted(formatter)
    theirs = concurrent_log_handler.ConcurrentRotatingFileHandler(
        str(tmp_path / "theirs.log"), encoding="utf-8")
    ours = logsinks.ConcurrentRotatingFileHandler(str(tmp_path / "ours.log"), encoding="utf-8")
    for handler in (theirs, ours):
        handler.setFormatter(formatter)
    try:
        for record in made:  # the old path: a record each
            theirs.handle(record)
        ours.write_text(text)  # the new one: the lines joined, one write
        ours.handle(made[0])  # a record that is not a run's still goes through emit
        theirs.handle(made[0])
    finally:
        theirs.close()
        ours.close()
    written = (tmp_path / "ours.log").read_bytes()
    assert written == (tmp_path / "theirs.log").read_bytes()
    assert len(written.splitlines()) == len(made) + 1


def test_stdout_gets_the_bytes_the_standard_handler_wrote():
    formatter = JsonFormatter()
    made, text = formatted(formatter)
    theirs, ours = io.StringIO(), io.StringIO()
    standard, handler = logging.StreamHandler(theirs), logsinks.StreamHandler(ours)
    for sink in (standard, handler):
        sink.setFormatter(formatter)
    for record in made:
        standard.handle(record)
    handler.write_text(text)
    assert ours.getvalue() == theirs.getvalue()


def file_lines(folder, name="app.log") -> list[str]:
    """The lines of the file and its rotated copies, oldest first."""
    copies = sorted(folder.glob(f"{name}.*"), key=lambda path: -int(path.suffix[1:]))
    return [line for path in [*copies, folder / name] for line in path.read_text().splitlines()]


def test_writers_of_one_file_rotate_it_together(tmp_path):
    """Two handlers on one file, as two workers have: each sees the other's rotation (its
    next write goes to the new file) and rotates at the size the other's lines made."""
    path = tmp_path / "app.log"
    writers = [logsinks.ConcurrentRotatingFileHandler(str(path), encoding="utf-8",
                                                      maxBytes=1000, backupCount=50)
               for _ in range(2)]
    try:
        for n in range(60):
            writers[n % 3 % 2].write_text(f"line-{n:02d}-" + "x" * 91)  # 100 bytes a line
    finally:
        for writer in writers:
            writer.close()
    assert file_lines(tmp_path) == [f"line-{n:02d}-" + "x" * 91 for n in range(60)]
    rotated = sorted(tmp_path.glob("app.log.*"))
    assert len(rotated) == 5  # rotated at 1000 bytes: ten lines a file
    assert all(copy.stat().st_size == 1000 for copy in rotated)


def test_threads_writing_records_and_runs_lines_keep_every_line_whole(tmp_path):
    path = tmp_path / "app.log"
    handler = logsinks.ConcurrentRotatingFileHandler(str(path), encoding="utf-8",
                                                     maxBytes=20_000, backupCount=50)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("app.test.sinks")

    def write(index: int) -> None:
        for n in range(50):
            if index % 2:
                handler.write_text(f'{{"t": {index}, "n": {n}, "x": "{"y" * 300}"}}')
            else:
                handler.handle(log.makeRecord(log.name, logging.INFO, "", 0, "record",
                                              (), None, extra={"t": index, "n": n}))

    threads = [threading.Thread(target=write, args=(index,)) for index in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        handler.close()
    entries = [json.loads(line) for line in file_lines(tmp_path)]
    assert sorted((e["t"], e["n"]) for e in entries) == [(t, n) for t in range(4)
                                                         for n in range(50)]
    assert len(list(tmp_path.glob("app.log.*"))) >= 2


def test_a_deleted_log_file_is_made_anew(tmp_path):
    path = tmp_path / "app.log"
    handler = logsinks.ConcurrentRotatingFileHandler(str(path), encoding="utf-8")
    try:
        handler.write_text("one")
        os.remove(path)
        handler.write_text("two")
    finally:
        handler.close()
    assert path.read_text() == "two\n"


def test_a_write_that_fails_is_reported_as_emit_reports_it(tmp_path, monkeypatch):
    reported = []
    handler = logsinks.ConcurrentRotatingFileHandler(str(tmp_path / "gone" / "app.log"),
                                                     encoding="utf-8")
    monkeypatch.setattr(handler, "handleError", reported.append)
    handler.write_text("lost")  # no folder: the write fails, the caller goes on
    handler.close()
    assert [record.getMessage() for record in reported] == ["lost"]


def test_the_files_lock_is_taken_and_released_with_flock(tmp_path, monkeypatch):
    calls = []
    real = logsinks.fcntl.flock
    monkeypatch.setattr(logsinks.fcntl, "flock",
                        lambda fd, operation: (calls.append(operation), real(fd, operation)))
    handler = logsinks.ConcurrentRotatingFileHandler(str(tmp_path / "app.log"),
                                                     encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    try:
        handler.write_text("a run's lines")
        handler.handle(records()[0])  # a record: the same lock
    finally:
        handler.close()
    assert calls == [logsinks.fcntl.LOCK_EX, logsinks.fcntl.LOCK_UN] * 2
