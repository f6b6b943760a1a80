"""The JSON-lines formatter (lines cut to a bound), and a run's lines written together."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import threading

import pytest

from app import create_app, logconfig, redact
from app.logconfig import TRUNCATED, JsonFormatter, batched, flush_bytes, request_id
from tests.helpers import DEV_AUTH, definition, post_run


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("app.test", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


def test_one_json_object_per_line_with_request_id_and_extras():
    token = request_id.set("req-7")
    try:
        line = JsonFormatter().format(record("hello é", runId="run_1", apiKey="s3cr3t"))
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert "\n" not in line and "é" in line
    assert (entry["message"], entry["requestId"], entry["runId"]) == ("hello é", "req-7", "run_1")
    assert entry["level"] == "INFO" and entry["ts"].endswith("Z")
    assert entry["apiKey"] == "[redacted]"


def test_log_lines_stay_encodable_with_lone_surrogates():
    line = JsonFormatter().format(record("a\ud800b é"))
    line.encode("utf-8")  # what the stdout and file handlers do; a raw surrogate fails here
    assert json.loads(line)["message"] == "a\ud800b é"


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


# A line is at most LOG_LINE_MAX_BYTES of UTF-8, its long values cut after redaction.

def test_a_long_line_is_cut_to_64_kib_and_stays_one_json_object():
    token = request_id.set("req-long")
    try:
        line = JsonFormatter().format(record(
            'é"\n😀' * 40_000, runId="run_1", nodeId="a", big={"k": ["v" * 100_000]}))
    finally:
        request_id.reset(token)
    assert len(line.encode("utf-8")) <= 64 * 1024 and "\n" not in line
    entry = json.loads(line)
    assert (entry["requestId"], entry["runId"], entry["nodeId"]) == ("req-long", "run_1", "a")
    assert (entry["level"], entry["logger"]) == ("INFO", "app.test") and entry["ts"].endswith("Z")
    assert entry["message"].startswith('é"\n😀é"\n😀') and entry["message"].endswith(TRUNCATED)
    assert entry["big"].startswith('{"k": ["vvv') and entry["big"].endswith(TRUNCATED)
    assert len(line.encode("utf-8")) > 60 * 1024  # cut to the bound, not far below it


def test_a_short_line_is_not_cut():
    line = JsonFormatter(line_max_bytes=1024).format(record("x" * 800, runId="run_1"))
    assert json.loads(line)["message"] == "x" * 800


def test_a_long_line_with_a_lone_surrogate_stays_within_the_bound():
    line = JsonFormatter(line_max_bytes=4096).format(record("\ud800é" * 10_000))
    line.encode("utf-8")
    assert len(line) <= 4096 and json.loads(line)["message"].startswith("\ud800é\ud800é")


def test_a_line_with_too_many_fields_keeps_the_main_ones():
    extras = {f"field_number_{i:04d}": i for i in range(200)}
    token = request_id.set("req-9")
    try:
        line = JsonFormatter(line_max_bytes=1024).format(record("hello", **extras))
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert len(line.encode("utf-8")) <= 1024
    assert (entry["message"], entry["requestId"]) == (f"hello {TRUNCATED}", "req-9")


def test_text_is_redacted_before_it_is_cut():
    secret = "hunter2-correct-horse-battery"
    formatter = JsonFormatter(line_max_bytes=1024)
    token = redact.current.set(redact.Redactor([secret]))
    try:
        # Somewhere in this range the cut falls inside the secret.
        lines = [formatter.format(record("a" * size + secret + "b" * 2000))
                 for size in range(850, 1000, 3)]
    finally:
        redact.current.reset(token)
    for line in lines:
        assert len(line.encode("utf-8")) <= 1024
        cut = json.loads(line)["message"].removesuffix(TRUNCATED)
        assert not any(cut.endswith(secret[:n]) for n in range(3, len(secret) + 1))


def test_the_formatter_redacts_with_redact_current():
    assert logconfig.redactor is redact.current
    token = redact.current.set(redact.Redactor(["s3cr3t-value"]))
    try:
        line = JsonFormatter().format(record("key s3cr3t-value", note="s3cr3t-value!"))
    finally:
        redact.current.reset(token)
    assert (json.loads(line)["message"], json.loads(line)["note"]) == (
        "key [redacted]", "[redacted]!")


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
