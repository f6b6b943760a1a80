"""The JSON-lines formatter: a record as one line, redacted, cut to a bound."""
from __future__ import annotations

import json
import logging
import time
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app import logformat, redact
from app.logformat import TRUNCATED, JsonFormatter, _dumps, request_id


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
    token = redact.current.set(redact.Redactor(["s3cr3t-value"]))
    try:
        line = JsonFormatter().format(record("key s3cr3t-value", note="s3cr3t-value!"))
    finally:
        redact.current.reset(token)
    assert (json.loads(line)["message"], json.loads(line)["note"]) == (
        "key [redacted]", "[redacted]!")


# A line's text is json.dumps's, made more cheaply (_dumps), and its ts is the record's.

class Text(str):
    """A str subclass: json writes it as the string it is."""


scalars = (st.text() | st.integers() | st.floats() | st.booleans() | st.none()
           | st.builds(Text, st.text()) | st.builds(Decimal, st.integers()))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8)


@given(st.dictionaries(st.text(), values, max_size=8))
def test_a_lines_text_is_what_json_dumps_writes(entry):
    assert _dumps(entry) == json.dumps(entry, default=str, ensure_ascii=False)


# A line of strings, ints, booleans and None (a run's own lines) is orjson's, made to be
# json's text: every character (control ones, quotes, lone surrogates), any int.
flat = (st.text(st.characters(exclude_categories=())) | st.integers() | st.booleans()
        | st.none() | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63 - 1]))


@given(st.dictionaries(st.text(st.characters(exclude_categories=())), flat, max_size=12))
@example({"ts": "2026-01-01T00:00:00.000Z", "message": 'a,\n  "b": 1', "n": 2**70})
@example({"a": "\x00\x1f\x7f\u2028\"\\\n\t\b\f\r\ud800"})
def test_a_flat_lines_text_is_what_json_dumps_writes(entry):
    assert _dumps(entry) == json.dumps(entry, default=str, ensure_ascii=False)


def test_ts_is_the_records_time_in_utc_to_the_millisecond():
    formatter = JsonFormatter()
    # The same second twice, the next, one long before (the second's text is reused
    # only within its second).
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0, 1_600_000_000.5,
                    1_700_000_001.125):
        entry = record("at")
        entry.created, entry.msecs = created, int((created - int(created)) * 1000) + 0.0
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        ts = json.loads(formatter.format(entry))["ts"]
        assert ts == f"{expected}.{int(entry.msecs):03d}Z"
    # A record made by hand may carry any msecs: written as before, not looked up.
    for msecs in (0.0, 7.0, 999.0, 1234.0, -5.0):
        entry = record("at")
        entry.created, entry.msecs = 1_700_000_000.0, msecs
        assert json.loads(formatter.format(entry))["ts"].endswith(f".{int(msecs):03d}Z")


def test_extras_keep_the_order_they_were_given_in():
    names = ["zeta", "runId", "alpha", "nodeId", "status", "b"]
    token = request_id.set("req-9")
    try:
        line = JsonFormatter().format(record("x", **{name: name for name in names}))
    finally:
        request_id.reset(token)
    assert list(json.loads(line)) == ["ts", "level", "logger", "message", "pid", "requestId",
                                      *names]


# Without sensitive values (outside a run, or a run that has none) a scalar and the
# message are kept without a call to the redactor: the same line as through it.

@given(st.text(), st.dictionaries(st.text().filter(lambda key: not key.startswith("_")),
                                  values, max_size=6), st.booleans())
@example("m", {"data": {"apiKey": "k", "list": [{"password": "p"}]}, "n": 1}, True)
@example("m", {"data": {"apiKey": "k"}}, False)
def test_a_keys_only_redactor_is_skipped_for_scalars_with_the_same_line(message, extra, run):
    extra.pop("requestId", None)
    entry, lines = record(message, **extra), []
    for skipped in (True, False):
        token = redact.current.set(redact.Redactor() if run else None)
        try:
            with pytest.MonkeyPatch.context() as patch:
                if not skipped:  # every value through the redactor
                    patch.setattr(logformat, "_SCALARS", frozenset())
                lines.append(JsonFormatter()._format(entry))
        finally:
            redact.current.reset(token)
    assert lines[0] == lines[1]


def test_a_redactor_is_keys_only_without_sensitive_text():
    assert redact.Redactor().keys_only and redact.Redactor([]).keys_only
    assert not redact.Redactor(["s3cr3t-value"]).keys_only
    token = redact.current.set(redact.Redactor(["s3cr3t-value", 123456789]))
    try:
        entry = json.loads(JsonFormatter().format(record("s3cr3t-value", n=123456789,
                                                         note="a s3cr3t-value")))
    finally:
        redact.current.reset(token)
    assert (entry["message"], entry["n"], entry["note"]) == (
        "[redacted]", "[redacted]", "a [redacted]")
