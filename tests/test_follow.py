"""Following a run from the store (app/follow.py): its events, read from a real store."""
from __future__ import annotations

import time

from app import follow
from app.store import SQLiteStore


def test_a_run_followed_before_its_first_state_is_written_starts_its_stream(tmp_path):
    """A run just started has no executionState stored yet: its stream starts all the same
    and goes on to its end."""
    store = SQLiteStore(str(tmp_path / "store.sqlite3"))
    store.migrate()
    token = store.ensure_token("t", "secret", 10)
    store.start_run("run_a", token.id, None, 1, 60)
    stream = follow.events(store, "run_a", token.id, lambda seconds: True,
                           time.monotonic() + 10)
    assert next(stream) == [("run.started", '{"runId":"run_a"}')]
    answer = ('{"runId":"run_a","status":"success","executionState":{"root":{"type":"manual",'
              '"status":"success","level":0}}}')
    store.finish_run("run_a", token.id, "success", 0, answer)
    finished = next(stream)
    assert [name for name, _ in finished] == ["node.finished", "run.finished"]
    assert finished[-1][1] == answer
    store.close()
