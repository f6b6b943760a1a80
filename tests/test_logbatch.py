"""A run's lines written together at its end, in writes of at most flush_bytes."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import threading

import pytest

from app import create_app
from app.logbatch import batched, flush_bytes
from app.logformat import TRUNCATED
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
