"""A run's stored texts (app/state.py)."""
from __future__ import annotations

import pytest

from app.state import body_text, dumps, running_text, summary


@pytest.mark.parametrize("run_id", ["run_01m8pg64zb917rps775bpg37ng", "my-run_1", "", 'a"b\\c',
                                    "é\u2028\x00", "\ud800"])
def test_a_run_in_flight_is_stored_as_the_answers_shape_writes_it(run_id):
    """Written at once (every run stores it), byte for byte what body_text writes."""
    assert running_text(run_id) == body_text(summary(run_id, "running", 0, 0, None), ())


@pytest.mark.parametrize("status", ["running", "success", "failure", "cancelled"])
@pytest.mark.parametrize("run_id", ["run_01m8pg64zb917rps775bpg37ng", 'a"b\\c', "é\u2028\x00",
                                    "\ud800"])
@pytest.mark.parametrize("error", [None, {"code": "NODE_FAILED", "message": "Node 'é' \"x\""}])
def test_a_summary_is_written_as_dumps_writes_it(status, run_id, error):
    """The summary's fields are written without dumps (every answer has them): the same
    text as dumps of the summary, whatever the run id and error hold."""
    fields = summary(run_id, status, 1234567, 10**20, error)
    assert body_text(fields, ()) == dumps({**fields, "executionState": {}})
