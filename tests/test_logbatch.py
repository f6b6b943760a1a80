"""A run's lines written together at its end, in writes of at most flush_bytes."""
from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import threading
import time

import pytest

from app import create_app, logbatch, redact
from app.logbatch import batched, flush_bytes
from app.logformat import TRUNCATED, request_id
from tests.helpers import DEV_AUTH, definition, post_run


def file_lines(tmp_path) -> list[dict]:
    path = tmp_path / "log" / "app.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_runs_lines_are_written_together_at_its_end(client, tmp_path, monkeypatch):
    writes = []
    sink = next(h.sink for h in logging.getLogger("app").handlers
                if type(h.sink).__name__ == "ConcurrentRotatingFileHandler")
    real = sink.do_write
    monkeypatch.setattr(sink, "do_write", lambda text: (writes.append(text), real(text)))
    body = {"definition": definition("root>a", "a>b", a={"type": "log", "payload": {
        "message": "first"}}, b={"type": "log", "payload": {"message": "second"}})}
    run = post_run(client, body).json
    assert len(writes) == 1  # one lock of the shared file, one write
    lines = [e for e in file_lines(tmp_path) if e.get("runId") == run["runId"]]
    assert [e["message"] for e in lines] == ["first", "second", "run finished"]
    assert all(e["requestId"] == lines[0]["requestId"] for e in lines)


def test_lines_logged_after_the_batch_ends_are_written_at_once(app, tmp_path):
    log = logging.getLogger("app.test")
    late = threading.Event()
    thread = threading.Thread(target=lambda: late.wait(5) and log.info("late"))
    with app.app_context(), batched():
        log.info("inside")
        thread.start()  # a thread of the run that outlives it
        held = [e["message"] for e in file_lines(tmp_path)]
    late.set()
    thread.join()
    assert held == []  # nothing written while the batch was open
    assert [e["message"] for e in file_lines(tmp_path)][-2:] == ["inside", "late"]


# A run's lines reach the file in writes of at most flush_bytes (a quarter of the rotation).

def test_flush_bytes_is_a_quarter_of_the_rotation_size_at_most_1_mib():
    def rotating(size: int) -> logging.Handler:
        return logging.handlers.RotatingFileHandler(os.devnull, maxBytes=size, delay=True)

    assert flush_bytes(logging.StreamHandler()) == flush_bytes(rotating(0)) == 1 << 20
    assert (flush_bytes(rotating(100_000)), flush_bytes(rotating(1 << 30))) == (25_000, 1 << 20)


@pytest.fixture
def small_log_app(tmp_path):
    """An app whose log file rotates at 100,000 bytes, with lines of at most 8 KiB."""
    app = create_app({"TESTING": True, "STORE_PATH": str(tmp_path / "runner.sqlite3"),
                      "LOG_FILE": str(tmp_path / "log" / "app.log"), "LOG_MAX_BYTES": 100_000,
                      "LOG_LINE_MAX_BYTES": 8192})
    app.extensions["store"].ensure_token("dev", DEV_AUTH["Authorization"].split()[1], 1_000_000)
    return app


def file_writes(monkeypatch) -> list[str]:
    writes = []
    sink = next(h.sink for h in logging.getLogger("app").handlers
                if type(h.sink).__name__ == "ConcurrentRotatingFileHandler")
    real = sink.do_write
    monkeypatch.setattr(sink, "do_write", lambda text: (writes.append(text), real(text)))
    return writes


def test_a_batch_is_written_in_writes_of_at_most_a_quarter_of_the_rotation_size(
        small_log_app, tmp_path, monkeypatch):
    writes = file_writes(monkeypatch)
    log = logging.getLogger("app.test")
    with small_log_app.app_context(), batched():
        for index in range(300):
            log.info("line %d %s", index, "x" * 1000)
    assert 10 <= len(writes) <= 20
    assert all(len(text.encode("utf-8")) <= 25_000 for text in writes)
    messages = [e["message"] for e in rotated_lines(tmp_path)]
    assert messages == [f"line {index} {'x' * 1000}" for index in range(300)]  # whole, in order


def rotated_lines(tmp_path) -> list[dict]:
    """The lines of the log file and its rotated copies, oldest first."""
    files = sorted((tmp_path / "log").glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()
            ] + file_lines(tmp_path)


def test_a_runs_long_log_lines_are_cut_and_flushed_by_size(small_log_app, tmp_path, monkeypatch):
    writes = file_writes(monkeypatch)
    nodes = {f"n{i}": {"type": "log", "payload": {"message": f"{i} " + "é" * 20_000}}
             for i in range(6)}
    body = {"definition": definition(*(f"root>n{i}" for i in range(6)), **nodes)}
    run = post_run(small_log_app.test_client(), body).json
    assert run["status"] == "success"
    assert len(writes) >= 2 and all(len(text.encode("utf-8")) <= 25_000 for text in writes)
    lines = [e for e in rotated_lines(tmp_path) if e.get("runId") == run["runId"]]
    assert sorted(e["message"][:2] for e in lines[:-1]) == [f"{i} " for i in range(6)]
    assert all(e["message"].endswith(TRUNCATED) for e in lines[:-1])
    assert lines[-1]["message"] == "run finished"
    assert all(len(line) <= 8192 for path in (tmp_path / "log").glob("app.log*")
               for line in path.read_bytes().splitlines())


# logbatch.info, the app's own lines of a run (a log node's, the summary): held without
# a record inside a batch, the very line Logger.info would give; else Logger.info itself.

@pytest.fixture
def sinks(app, monkeypatch):
    """What the app's sinks are handed, as (sink, text), with the clock stopped: a line
    made by ``info`` and one made by ``Logger.info`` can be compared byte for byte."""
    out: list[tuple[str, str]] = []
    for handler in logging.getLogger("app").handlers:
        sink, name = handler.sink, type(handler.sink).__name__
        monkeypatch.setattr(sink, "write_text", lambda text, name=name: out.append((name, text)))
        monkeypatch.setattr(sink, "handle", lambda record, name=name, sink=sink: out.append(
            (name, sink.format(record))))
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.987_654)
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_987_654_321)
    records = []
    make_record = logging.Logger.makeRecord
    monkeypatch.setattr(logging.Logger, "makeRecord", lambda *args, **kwargs: (
        records.append(args[1]), make_record(*args, **kwargs))[1])
    with app.app_context():
        yield out, records


def ours_only(monkeypatch) -> list[logging.Handler]:
    """The app logger's handlers without the ones pytest adds to every logger that does
    not propagate (its log capture, which takes the record's way: see the test below)."""
    app_log = logging.getLogger("app")
    ours = [handler for handler in app_log.handlers if isinstance(handler, logbatch.Batching)]
    monkeypatch.setattr(app_log, "handlers", ours)
    return ours


def both_ways(sinks, logger, message, extra, batch=True):
    """What the sinks got from ``info`` and from ``logger.info``, and the records each
    made."""
    out, records = sinks
    seen = []
    for log in (lambda: logbatch.info(logger, message, extra),
                lambda: logger.info(message, extra=extra)):
        out.clear()
        records.clear()
        with batched() if batch else contextlib.nullcontext():
            log()
        seen.append((list(out), len(records)))
    return seen


EXTRA = {"runId": "run_1", "nodeId": "a", "apiKey": "s3cr3t", "n": 3, "x": None,
         "big": {"k": ["é" * 10, 1.5]}, "_private": 1}


def test_info_holds_the_line_logger_info_would_without_a_record(sinks, monkeypatch):
    ours_only(monkeypatch)
    rid, redacting = request_id.set("req-9"), redact.current.set(redact.Redactor(["hunter2"]))
    try:
        fast, slow = both_ways(sinks, logging.getLogger("app.nodes.log"),
                               "said hunter2 é 😀 \ud800", EXTRA)
    finally:
        request_id.reset(rid)
        redact.current.reset(redacting)
    assert (fast[1], slow[1]) == (0, 1)  # no record made
    assert fast[0] == slow[0] and len(fast[0]) == 2  # both sinks, the same text
    entry = json.loads(fast[0][0][1])
    assert entry["message"] == "said [redacted] é 😀 \ud800" and entry["apiKey"] == "[redacted]"
    assert "_private" not in entry and (entry["n"], entry["x"]) == (3, None)
    assert (entry["requestId"], entry["ts"]) == ("req-9", "2023-11-14T22:13:20.987Z")


def test_info_cuts_a_long_line_as_a_record_is_cut(sinks, monkeypatch):
    ours_only(monkeypatch)
    fast, slow = both_ways(sinks, logging.getLogger("app.test"), "x" * 100_000,
                           {"runId": "run_1", "requestId": "req-own", "y": "é" * 70_000})
    assert fast[0] == slow[0] and (fast[1], slow[1]) == (0, 1)
    assert all(TRUNCATED in text and len(text.encode("utf-8")) <= 64 * 1024
               for _, text in fast[0])


class Dropping(logging.Filter):
    def filter(self, record):
        return False


@pytest.mark.parametrize("setup", [
    "logger_level", "logger_disabled", "logger_filter", "handler_level", "handler_filter",
    "other_handler", "propagating_to_root", "disabled_everywhere"])
def test_info_honours_levels_filters_and_other_handlers(sinks, monkeypatch, setup):
    app_log, logger = logging.getLogger("app"), logging.getLogger("app.test")
    ours = ours_only(monkeypatch)
    other = logging.handlers.BufferingHandler(100)  # what caplog is to the app
    if setup == "logger_level":
        monkeypatch.setattr(logger, "level", logging.WARNING)
        monkeypatch.setattr(logger, "_cache", {})
    elif setup == "logger_disabled":
        monkeypatch.setattr(logger, "disabled", True)
    elif setup == "logger_filter":
        monkeypatch.setattr(logger, "filters", [Dropping()])
    elif setup == "handler_level":
        monkeypatch.setattr(ours[0], "level", logging.WARNING)
    elif setup == "handler_filter":
        monkeypatch.setattr(ours[1], "filters", [Dropping()])
    elif setup == "other_handler":
        monkeypatch.setattr(app_log, "handlers", [*ours, other])
    elif setup == "propagating_to_root":
        monkeypatch.setattr(app_log, "propagate", True)
        monkeypatch.setattr(logging.getLogger(), "handlers", [other])
    elif setup == "disabled_everywhere":
        monkeypatch.setattr(logging.root.manager, "disable", logging.INFO)  # logging.disable
        monkeypatch.setattr(logger, "_cache", {})
    fast, slow = both_ways(sinks, logger, "hello", {"runId": "run_1"})
    assert fast[0] == slow[0]  # what each sink got
    assert len(fast[0]) == {"logger_level": 0, "logger_disabled": 0, "logger_filter": 0,
                            "handler_level": 1, "handler_filter": 1, "other_handler": 2,
                            "propagating_to_root": 2, "disabled_everywhere": 0}[setup]
    if setup in ("other_handler", "propagating_to_root"):
        assert [record.getMessage() for record in other.buffer] == ["hello", "hello"]


def test_info_outside_a_batch_is_logger_info(sinks, monkeypatch):
    ours_only(monkeypatch)
    fast, slow = both_ways(sinks, logging.getLogger("app.test"), "hello", {"runId": "run_1"},
                           batch=False)
    assert fast == slow and fast[1] == 1 and len(fast[0]) == 2


def test_info_refuses_the_keys_logger_info_refuses(app):
    with app.app_context(), batched():
        for key in ("message", "asctime", "levelname", "process"):
            with pytest.raises(KeyError):
                logbatch.info(logging.getLogger("app.test"), "hello", {key: 1})


def test_a_runs_lines_are_held_without_records(client, monkeypatch):
    ours_only(monkeypatch)
    made = []
    make_record = logging.Logger.makeRecord
    monkeypatch.setattr(logging.Logger, "makeRecord", lambda *args, **kwargs: (
        made.append(args[0].name), make_record(*args, **kwargs))[1])
    body = {"definition": definition("root>a", a={"type": "log", "payload": {
        "message": "first"}})}
    assert post_run(client, body).json["status"] == "success"
    assert made == []  # the log node's line and the summary: no record


def test_pytests_log_capture_sees_a_runs_lines(client, caplog):
    body = {"definition": definition("root>a", a={"type": "log", "payload": {
        "message": "first"}})}
    run = post_run(client, body).json
    assert [(r.getMessage(), r.runId) for r in caplog.records if r.name != "app.api"] == [
        ("first", run["runId"]), ("run finished", run["runId"])]
