"""``make profile`` (bench/profile.py): its runs work, and its split per component counts
each function where it belongs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench import profile


@pytest.mark.parametrize("which", ["workflow", "floor", "bare"])
def test_each_app_answers_through_the_wsgi_callable(which):
    """What callgrind measures: a few requests, each answer checked (exit 1 otherwise)."""
    done = subprocess.run([sys.executable, "-m", "bench.profile", "--app", which,
                           "--runs", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""


class _Stats:
    """pstats.Stats' table: {function: (calls, primitive calls, own s, cumulative s,
    {caller: (calls, primitive calls, own s, cumulative s)})}."""

    def __init__(self, table):
        self.stats = table


def test_a_function_of_no_component_is_split_among_its_callers_by_time_under_each():
    log = ("/x/app/logformat.py", 1, "format")
    store = ("/x/app/store/sqlite.py", 1, "finish")
    dumps = ("~", 0, "<built-in method json.dumps>")
    stats = _Stats({
        log: (1, 1, 0.1, 0.4, {}),
        store: (1, 1, 0.2, 1.1, {}),
        # 0.3 s of its own by a caller of 0.3 s under it and one of 0.9 s
        dumps: (2, 2, 1.2, 1.2, {log: (1, 1, 0.3, 0.3), store: (1, 1, 0.9, 0.9)}),
    })
    seconds = profile.shares(stats)
    assert seconds["logging"] == pytest.approx(0.1 + 1.2 * 0.25)
    assert seconds["store"] == pytest.approx(0.2 + 1.2 * 0.75)
    assert sum(seconds.values()) == pytest.approx(1.5)


def test_components_by_module():
    assert profile.component("/v/lib/python3.11/logging/__init__.py") == "logging"
    assert profile.component("/w/app/engine.py") == "engine and nodes"
    assert profile.component("/w/app/nodes/format_.py") == "engine and nodes"
    assert profile.component("/w/app/nodes/log.py") == "logging"
    assert profile.component("/v/site-packages/werkzeug/local.py") == "Flask, Werkzeug"
    assert profile.component("/v/lib/python3.11/json/encoder.py") is None
