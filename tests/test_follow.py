"""Following a run from the store (app/follow.py's entry point) on a real SQLite file."""
from __future__ import annotations

import json
import time

from app import follow
from app.state import body_text, dumps, summary
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


def _states(tmp_path, texts: list[str], final: str) -> list[list[tuple[str, str]]]:
    """The batches a follower reads from a run that writes ``texts`` one by one (one per
    pause of the follower), then ends with ``final``."""
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    store.migrate()
    store.create_token("alice", 5)
    token = store.token_by_name("alice")
    store.start_run("run_a", token.id, None, 3, 60)
    todo = list(texts)

    def wait(seconds: float) -> bool:
        if todo:
            store.save_progress("run_a", token.id, 1, todo.pop(0))
        else:
            store.finish_run("run_a", token.id, "success", 1, final)
        return True

    batches = list(follow.events(store, "run_a", token.id, wait, time.monotonic() + 60))
    store.close()
    return batches


ROOT = '{"type":"manual","status":"success","level":0,"result":{"n":1}}'
ROOT_BARE = '{"type":"manual","status":"success","level":0}'
SAY = ('{"type":"log","status":"%s","level":1,"startedAt":"2026-01-01T00:00:00.000Z",'
       '"attempts":1}')


def test_each_entry_finishes_once_with_its_text_as_stored_though_it_changes_later(tmp_path):
    """A finished entry is sent once, its stored text as it is; read again unchanged, or
    changed (a partial state past its size leaves entries bare), it is not sent again."""
    running = summary("run_a", "running", 5, 1, None)
    texts = [body_text(running, [("root", ROOT)]),
             body_text(running, [("root", ROOT), ("say", SAY % "running")]),
             body_text(running, [("root", ROOT_BARE), ("say", SAY % "running")])]
    final = body_text(summary("run_a", "success", 9, 1, None),
                      [("root", ROOT), ("say", SAY % "success")])
    events = [event for batch in _states(tmp_path, texts, final) for event in batch]
    assert events == [
        ("run.started", '{"runId":"run_a"}'),
        ("node.finished", f'{{"nodeId":"root","state":{ROOT}}}'),
        ("node.started", dumps({"nodeId": "say", "attempt": 1,
                                "startedAt": "2026-01-01T00:00:00.000Z"})),
        ("node.finished", f'{{"nodeId":"say","state":{SAY % "success"}}}'),
        ("run.finished", final)]
    assert all(json.loads(data) for _, data in events)


def test_a_state_written_otherwise_than_the_app_writes_it_is_read_whole(tmp_path):
    """Text of another layout (spaced, entries first) gives the same events."""
    texts = [json.dumps({"executionState": {"root": json.loads(ROOT)}, "status": "running"},
                        indent=1)]
    final = body_text(summary("run_a", "success", 9, 1, None), [("root", ROOT)])
    events = [event for batch in _states(tmp_path, texts, final) for event in batch]
    assert [name for name, _ in events] == ["run.started", "node.finished", "run.finished"]
    assert json.loads(events[1][1]) == {"nodeId": "root", "state": json.loads(ROOT)}
