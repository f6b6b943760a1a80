"""Hostile requests against real gunicorn (bench/hostile.py, ``make hostile``): each one
answers by its deadline, burns no CPU after its answer, and stays inside its memory,
size and log limits (SPEC §3, §8, §9), loops included (§11)."""
from __future__ import annotations

import pytest

from bench import hostile

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return hostile.seed(tmp_path_factory.mktemp("seed"))


@pytest.mark.parametrize("case", hostile.SCENARIOS, ids=lambda case: case.name)
def test_hostile_request_stays_inside_its_limits(case, tokens, tmp_path):
    rows = hostile.run_scenario(case, tmp_path, tokens)
    assert rows and not any(row.problems for row in rows), "\n" + hostile.table(rows)
