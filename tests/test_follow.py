"""Following a run from the store (app/follow.py's entry point) on a real SQLite file."""
from __future__ import annotations

import time

from app import follow
from app.state import dumps
from app.store import SQLiteStore, open_store


def test_a_run_followed_before_its_first_progress_is_written(tmp_path):
    """Between its start and its first tick (engine.TICK_S) a run's stored text lists no
    node: a follower then sees run.started and waits on."""
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    store.migrate()
    store.create_token("alice", 5)
    token = store.token_by_name("alice")
    store.start_run("run_a", token.id, None, 3, 60)
    waits = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) < 2  # the client leaves at the second pause

    batches = list(follow.events(store, "run_a", token.id, wait, time.monotonic() + 60))
    assert batches == [[("run.started", dumps({"runId": "run_a"}))], []]
    assert waits == [follow.POLL_S, follow.POLL_S]
    store.close()


def test_a_run_followed_before_its_first_state_is_written_starts_its_stream(tmp_path):
    """A run just started has no node stored yet: its stream starts all the same and goes
    on to its end."""
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
