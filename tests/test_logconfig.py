"""The JSON-lines formatter."""
from __future__ import annotations

import json
import logging

from app.logconfig import JsonFormatter, request_id


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
