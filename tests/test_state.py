"""A run's stored texts (app/state.py)."""
from __future__ import annotations

import pytest

from app.state import body_text, running_text, summary


@pytest.mark.parametrize("run_id", ["run_01m8pg64zb917rps775bpg37ng", "my-run_1", "", 'a"b\\c',
                                    "é\u2028\x00", "\ud800"])
def test_a_run_in_flight_is_stored_as_the_answers_shape_writes_it(run_id):
    """Written at once (every run stores it), byte for byte what body_text writes."""
    assert running_text(run_id) == body_text(summary(run_id, "running", 0, 0, None), ())
