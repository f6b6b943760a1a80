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
    """A scenario whose only fault is a late answer is measured once more, on a fresh
    server; late twice in a row, it fails. This machine now and then takes 10–40 µs per
    page fault instead of 2–3 (memory its host had taken back): a 32 MiB answer then
    spends up to a second in the kernel making its copies, which no CPU pressure shows.
    Seen in whole suites and in ``make hostile``, for one worker at a time (the workers
    around it faulting at 2–3 µs); the late row prints the tree's page faults and kernel
    seconds."""
    (tmp_path / "first").mkdir()
    rows = hostile.run_scenario(case, tmp_path / "first", tokens)
    assert rows
    failed = [row for row in rows if row.problems]
    if failed and all(row.late and len(row.problems) == 1 for row in failed):
        (tmp_path / "again").mkdir()
        again = hostile.run_scenario(case, tmp_path / "again", tokens)
        assert again and not any(row.problems for row in again), \
            "\nlate, then:\n" + hostile.table(rows) + "\n\n" + hostile.table(again)
        return
    assert not failed, "\n" + hostile.table(rows)
