"""Logging set up per process, and the names the rest of the app reaches it by."""
from __future__ import annotations

import logging

from app import logbatch, logconfig, logformat, redact


def test_the_app_reaches_logging_through_logconfig():
    assert logconfig.redactor is redact.current
    assert logconfig.request_id is logformat.request_id
    assert logconfig.batched is logbatch.batched


def test_each_sink_of_the_app_writes_json_lines_and_holds_a_runs_lines(app):
    ours = [h for h in logging.getLogger("app").handlers if isinstance(h, logbatch.Batching)]
    assert sorted(type(handler.sink).__name__ for handler in ours) == [
        "ConcurrentRotatingFileHandler", "StreamHandler"]  # the shared file and stdout
    assert all(isinstance(handler.sink.formatter, logformat.JsonFormatter) for handler in ours)


def test_no_line_is_longer_than_the_rotation_size():
    settings = {"LOG_FILE": "app.log", "LOG_MAX_BYTES": 1000, "LOG_LINE_MAX_BYTES": 8192}
    assert logconfig.config_dict(settings)["formatters"]["json"]["line_max_bytes"] == 1000
