"""The JSON-lines formatter, and a run's lines written together."""
from __future__ import annotations

import json
import logging
import threading

from app.logconfig import JsonFormatter, batched, request_id
from tests.helpers import definition, post_run


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
