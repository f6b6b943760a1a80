"""The store's side of run control (SPEC §12) on both backends: partial states and the
cancel flag, followers' reads, the runs list and its cursor, the balance with what runs
hold and have spent, the count of streams per token; and the migrations that add them,
from a store at the version before, with data in it."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

import pytest

from app import follow
from app.store import SCHEMA, Balance, SQLiteStore, TooManyRuns, open_store, token_hash
from app.store.postgres_schema import MIGRATIONS
from tests import test_store
from tests.test_store import DEAD, LATER, answer, stored

backend, store = test_store.backend, test_store.store  # the fixtures: each test on both

GONE_PID = 999_999_999  # no process has it
# A run before its worker's first partial state: already in the answer's shape.
JUST_STARTED = {"runId": "run_a", "status": "running", "durationMs": 0, "totalCu": 0,
                "error": None, "executionState": {}}


def partial(run_id, *nodes):
    """A run's partial state as the JSON text its worker stores."""
    return json.dumps({"runId": run_id, "status": "running",
                       "executionState": {node: {"status": "success"} for node in nodes}})


def sql(store, backend, statement, *params):
    """Run ``statement`` (written with ``?``) on the store's database, behind its back."""
    with store._db.transaction() as db:
        db.execute(statement if backend.kind == "sqlite" else statement.replace("?", "%s"),
                   params)


def column(backend, store, name, run_id):
    mark = "?" if backend.kind == "sqlite" else "%s"
    with store._db.transaction() as db:
        return db.execute(f"SELECT {name} AS value FROM runs WHERE id = {mark}",
                          (run_id,)).fetchone()["value"]


@pytest.fixture
def token(store):
    return store.token(store.create_token("alice", 100))


@pytest.fixture
def other(store):
    return store.token(store.create_token("bob", 100))


# -- save_progress ---------------------------------------------------------------------

def test_save_progress_stores_the_partial_state_and_attempts_while_running(
        store, backend, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    assert store.save_progress("run_a", token.id, 2, partial("run_a", "a")) is False
    assert store.run_text("run_a", token.id) == partial("run_a", "a")
    assert column(backend, store, "attempts", "run_a") == 2
    assert store.save_progress("run_a", token.id, 1, partial("run_a", "a", "b")) is False
    assert column(backend, store, "attempts", "run_a") == 2  # an older count never lowers it
    assert store.run_text("run_a", token.id) == partial("run_a", "a", "b")


def test_save_progress_without_text_reads_the_flag_only(store, backend, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    store.save_progress("run_a", token.id, 1, partial("run_a", "a"))
    progress = store.follow("run_a", token.id, 99)[0]
    assert store.save_progress("run_a", token.id, 4) is False
    assert store.run_text("run_a", token.id) == partial("run_a", "a")
    assert column(backend, store, "attempts", "run_a") == 1
    assert store.follow("run_a", token.id, 99)[0] == progress
    assert store.request_cancel("run_a", token.id) == "running"
    assert store.save_progress("run_a", token.id, 4) is True
    assert store.save_progress("run_a", token.id, 4, partial("run_a", "a", "b")) is True


def test_save_progress_after_the_run_ended_changes_nothing(store, backend, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    store.finish_run("run_a", token.id, "success", 3, answer("run_a", 3))
    progress = store.follow("run_a", token.id, 99)[0]
    assert store.save_progress("run_a", token.id, 5, partial("run_a", "late")) is False
    assert store.run_text("run_a", token.id) == answer("run_a", 3)
    assert column(backend, store, "attempts", "run_a") == 0
    assert store.follow("run_a", token.id, 99)[0] == progress
    assert store.balance(token.id) == Balance(97, 0, 3)


def test_save_progress_reaches_only_the_tokens_own_run(store, token, other):
    store.start_run("run_a", token.id, None, 5, LATER)
    store.start_run("run_a", other.id, None, 5, LATER)
    store.request_cancel("run_a", token.id)
    assert store.save_progress("run_a", other.id, 1, partial("run_a", "bobs")) is False
    assert store.save_progress("run_missing", token.id, 1) is False
    assert stored(store, "run_a", token.id) == JUST_STARTED


def test_a_run_just_started_is_stored_in_the_answers_shape(store, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    assert stored(store, "run_a", token.id) == JUST_STARTED


def test_a_follower_of_a_run_just_started_gets_its_start(store, token):
    """(Before its worker's first partial state, the stored text had no executionState,
    and a stream following the run failed at once.)"""
    store.start_run("run_a", token.id, None, 5, LATER)
    batches = follow.events(store, "run_a", token.id, lambda seconds: False, LATER)
    assert [name for name, _ in next(batches)] == ["run.started"]


# -- request_cancel --------------------------------------------------------------------

def test_request_cancel_answers_the_runs_status(store, token, other):
    assert store.request_cancel("run_none", token.id) is None
    store.start_run("run_a", token.id, None, 5, LATER)
    assert store.request_cancel("run_a", other.id) is None  # another token's: no such run
    assert store.save_progress("run_a", token.id, 0) is False
    assert store.request_cancel("run_a", token.id) == "running"
    assert store.request_cancel("run_a", token.id) == "running"  # asked again: the same
    assert store.save_progress("run_a", token.id, 0) is True
    store.finish_run("run_a", token.id, "cancelled", 1, answer("run_a", 1))
    assert store.request_cancel("run_a", token.id) == "cancelled"
    store.start_run("run_b", token.id, None, 5, LATER)
    store.finish_run("run_b", token.id, "success", 2, answer("run_b", 2))
    assert store.request_cancel("run_b", token.id) == "success"
    assert store.run_text("run_b", token.id) == answer("run_b", 2)  # untouched


def test_a_cancel_of_another_tokens_run_of_the_same_id_leaves_it_running(store, token, other):
    store.start_run("run_a", token.id, None, 5, LATER)
    store.start_run("run_a", other.id, None, 5, LATER)
    assert store.request_cancel("run_a", other.id) == "running"
    assert store.save_progress("run_a", other.id, 0) is True
    assert store.save_progress("run_a", token.id, 0) is False


# -- follow ----------------------------------------------------------------------------

def test_follow_counts_every_state_written_and_gives_text_only_when_new(store, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    first, text = store.follow("run_a", token.id, -1)
    assert json.loads(text) == JUST_STARTED
    assert store.follow("run_a", token.id, first) == (first, None)
    store.save_progress("run_a", token.id, 1, partial("run_a", "a"))
    second = store.follow("run_a", token.id, first)
    assert second == (first + 1, partial("run_a", "a"))
    store.save_progress("run_a", token.id, 1)  # the flag only: nothing new
    assert store.follow("run_a", token.id, first + 1) == (first + 1, None)
    store.save_progress("run_a", token.id, 2, partial("run_a", "a", "b"))
    assert store.follow("run_a", token.id, first + 1) == (first + 2, partial("run_a", "a", "b"))
    store.finish_run("run_a", token.id, "success", 2, answer("run_a", 2))
    assert store.follow("run_a", token.id, first + 2) == (first + 3, answer("run_a", 2))
    assert store.follow("run_a", token.id, first + 3) == (first + 3, None)
    assert store.follow("run_a", token.id, -1) == (first + 3, answer("run_a", 2))


def test_follow_sees_an_abort_as_a_new_state(store, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    seen = store.follow("run_a", token.id, -1)[0]
    assert store.abort_run("run_a", token.id, 2)
    progress, text = store.follow("run_a", token.id, seen)
    assert progress == seen + 1 and json.loads(text)["error"]["code"] == "ABORTED"


def test_follow_aborts_a_run_whose_worker_is_gone_first(store, backend, token):
    store.start_run("run_a", token.id, None, 5, LATER)
    store.save_progress("run_a", token.id, 3, partial("run_a", "a"))
    seen = store.follow("run_a", token.id, -1)[0]
    sql(store, backend, "UPDATE runs SET worker_pid = ? WHERE id = ?", GONE_PID, "run_a")
    progress, text = store.follow("run_a", token.id, seen)
    body = json.loads(text)
    assert progress == seen + 1
    assert (body["status"], body["error"]["code"], body["totalCu"]) == ("failure", "ABORTED", 3)
    assert store.balance(token.id) == Balance(97, 0, 3)


def test_follow_finds_only_the_tokens_own_run(store, token, other):
    store.start_run("run_a", token.id, None, 5, LATER)
    assert store.follow("run_a", other.id, -1) is None
    assert store.follow("run_none", token.id, -1) is None


# -- list_runs -------------------------------------------------------------------------

def make_runs(store, token_id, names, status="success"):
    """Start (and finish, unless ``status`` is running) a run of each name, in order."""
    for name in names:
        store.start_run(name, token_id, None, 2, LATER)
        if status != "running":
            store.finish_run(name, token_id, status, 1, answer(name, 1))


def test_list_runs_newest_first_with_their_summary(store, token):
    before = time.time()
    make_runs(store, token.id, ["run_1", "run_2"])
    make_runs(store, token.id, ["run_3"], "running")
    runs = store.list_runs(token.id, None, 10)
    assert [run.run_id for run in runs] == ["run_3", "run_2", "run_1"]
    assert [run.status for run in runs] == ["running", "success", "success"]
    assert [run.total_cu for run in runs] == [0, 1, 1]
    assert runs[0].duration_ms is None and all(run.duration_ms >= 0 for run in runs[1:])
    assert all(before - 5 < run.created_at < time.time() + 5 for run in runs)
    assert runs[0].row > runs[1].row > runs[2].row


def test_list_runs_filters_by_status(store, token):
    make_runs(store, token.id, ["run_ok1", "run_ok2"])
    make_runs(store, token.id, ["run_cancelled"], "cancelled")
    make_runs(store, token.id, ["run_live"], "running")
    make_runs(store, token.id, ["run_failed"], "failure")
    assert [run.run_id for run in store.list_runs(token.id, "success", 10)] == \
        ["run_ok2", "run_ok1"]
    assert [run.run_id for run in store.list_runs(token.id, "cancelled", 10)] == \
        ["run_cancelled"]
    assert [run.run_id for run in store.list_runs(token.id, "running", 10)] == ["run_live"]
    assert [run.run_id for run in store.list_runs(token.id, "failure", 10)] == ["run_failed"]
    assert len(store.list_runs(token.id, None, 10)) == 5
    assert [run.run_id for run in store.list_runs(token.id, None, 2)] == \
        ["run_failed", "run_live"]


def test_list_runs_pages_stay_stable_while_runs_are_added(store, token, other):
    """Every run there when paging began appears exactly once, newest first, however
    many runs (the token's and another's) are added between pages."""
    make_runs(store, token.id, [f"run_{i:02}" for i in range(10)])
    make_runs(store, other.id, [f"run_{i:02}" for i in range(3)])  # the same ids, bob's
    listed, before, added = [], None, 0
    while True:
        page = store.list_runs(token.id, None, 3, before)
        if not page:
            break
        listed += [run.run_id for run in page]
        before = page[-1].row
        make_runs(store, token.id, [f"run_new_{added}"])
        make_runs(store, other.id, [f"run_bob_{added}"])
        added += 1
    assert listed == [f"run_{i:02}" for i in reversed(range(10))]
    assert store.list_runs(token.id, "success", 100, before) == []
    assert {run.run_id for run in store.list_runs(other.id, None, 100)} == \
        {f"run_{i:02}" for i in range(3)} | {f"run_bob_{i}" for i in range(added)}


def test_list_runs_of_a_token_without_runs_is_empty(store, token, other):
    make_runs(store, other.id, ["run_1"])
    assert store.list_runs(token.id, None, 20) == []
    assert store.list_runs(token.id, None, 20, 1) == []


# -- balance ---------------------------------------------------------------------------

def test_balance_reserved_and_used_stay_exact_through_a_runs_life(store, token):
    assert store.balance(token.id) == Balance(100, 0, 0)
    store.start_run("run_a", token.id, None, 10, LATER)
    assert store.balance(token.id) == Balance(90, 10, 0)
    assert store.reserve_more("run_a", token.id, 15)
    assert store.balance(token.id) == Balance(75, 25, 0)
    assert not store.reserve_more("run_a", token.id, 76)  # refused: nothing changes
    assert store.balance(token.id) == Balance(75, 25, 0)
    store.start_run("run_b", token.id, None, 5, LATER)
    store.start_run("run_c", token.id, None, 5, LATER)
    assert store.balance(token.id) == Balance(65, 35, 0)
    store.finish_run("run_a", token.id, "cancelled", 7, answer("run_a", 7))
    assert store.balance(token.id) == Balance(83, 10, 7)
    store.save_progress("run_b", token.id, 3, partial("run_b", "x"))
    assert store.abort_run("run_b", token.id)  # charged its 3 started attempts
    assert store.balance(token.id) == Balance(85, 5, 10)
    store.finish_run("run_c", token.id, "success", 5, answer("run_c", 5))
    assert store.balance(token.id) == Balance(85, 0, 15)
    store.finish_run("run_c", token.id, "success", 5, answer("run_c", 5))  # once only
    assert store.balance(token.id) == Balance(85, 0, 15)


def test_balance_figures_are_integers(store, token):
    """(A sum in PostgreSQL is numeric, which the driver reads as a Decimal: JSON would
    show it as a string.)"""
    store.start_run("run_a", token.id, None, 10, LATER)
    idle = store.token(store.create_token("idle", 0))
    for found in (store.balance(token.id), store.balance(idle.id)):
        assert [type(figure) for figure in (found.balance, found.reserved, found.used)] == \
            [int, int, int]


def test_balance_is_the_tokens_own(store, token, other):
    store.start_run("run_a", token.id, None, 10, LATER)
    store.start_run("run_a", other.id, None, 4, LATER)
    store.finish_run("run_a", other.id, "success", 3, answer("run_a", 3))
    assert store.balance(token.id) == Balance(90, 10, 0)
    assert store.balance(other.id) == Balance(97, 0, 3)


def test_a_dead_runs_reservation_is_released_by_the_sweep(store, backend, token):
    store.start_run("run_a", token.id, None, 10, LATER)
    store.save_progress("run_a", token.id, 4, partial("run_a", "x"))
    sql(store, backend, "UPDATE runs SET worker_pid = ? WHERE id = ?", GONE_PID, "run_a")
    assert store.balance(token.id) == Balance(90, 10, 0)
    assert store.abort_orphans() == 1
    assert store.balance(token.id) == Balance(96, 0, 4)


# -- start_following / stop_following --------------------------------------------------

def test_followers_are_limited_per_token(store, token, other):
    first = store.start_following(token.id, 2, 60)
    second = store.start_following(token.id, 2, 60)
    assert None not in (first, second) and first != second
    assert store.start_following(token.id, 2, 60) is None
    assert store.start_following(other.id, 2, 60) is not None  # another token's own count
    store.stop_following(first)
    third = store.start_following(token.id, 2, 60)
    assert third is not None
    assert store.start_following(token.id, 2, 60) is None
    assert store.start_following(token.id, 3, 60) is not None  # a higher limit


def test_a_tokens_runs_and_streams_share_its_limit_of_workers(store, token, other):
    """SPEC §8: one token never holds every worker; a stream holds one as a run does."""
    store.start_run("run_a", token.id, None, 1, LATER, 2)
    follower = store.start_following(token.id, 5, 60, max_concurrent=2)
    assert follower is not None  # one run and one stream: two workers
    assert store.start_following(token.id, 5, 60, max_concurrent=2) is None
    with pytest.raises(TooManyRuns):
        store.start_run("run_b", token.id, None, 1, LATER, 2)
    store.start_run("run_b", other.id, None, 1, LATER, 2)  # another token's own count
    store.stop_following(follower)
    store.start_run("run_b", token.id, None, 1, LATER, 2)
    assert store.start_following(token.id, 5, 60, max_concurrent=2) is None


def test_the_streams_of_an_exited_worker_are_forgotten(store, token):
    follower = store.start_following(token.id, 1, 60)
    assert store.start_following(token.id, 1, 60) is None
    store.abort_runs_of_worker(os.getpid())  # as gunicorn's master does when it exits
    assert store.start_following(token.id, 1, 60) is not None
    store.stop_following(follower)  # gone already: nothing happens


def test_followers_of_gone_workers_or_past_their_time_are_not_counted(store, backend, token):
    store.start_following(token.id, 2, DEAD)  # past its time already
    gone = store.start_following(token.id, 2, 60)
    sql(store, backend, "UPDATE followers SET worker_pid = ? WHERE id = ?", GONE_PID, gone)
    assert store.start_following(token.id, 2, 60) is not None
    assert store.start_following(token.id, 2, 60) is not None
    assert store.start_following(token.id, 2, 60) is None


def test_followers_of_a_live_worker_of_another_host_count_until_their_time(pg_url):
    from app.store.postgres import PostgresStore

    here, there = PostgresStore(pg_url, host="here"), PostgresStore(pg_url, host="there")
    here.migrate()
    token = here.token(here.create_token("t", 1))
    there.start_following(token.id, 1, 60)
    with here._db.transaction() as db:  # its pid means nothing on this host
        db.execute("UPDATE followers SET worker_pid = %s", (GONE_PID,))
    assert here.start_following(token.id, 1, 60) is None
    with here._db.transaction() as db:
        db.execute("UPDATE followers SET expires_at = now() - interval '1 second'")
    assert here.start_following(token.id, 1, 60) is not None
    here.close()
    there.close()


@pytest.mark.parametrize("limit", [1, 3])
def test_racing_followers_never_exceed_the_limit(backend, limit):
    """Streams starting at once on separate connections (as on separate workers or
    hosts): the token's row lock lets exactly ``limit`` of them in, every round."""
    setup = backend.open()
    setup.migrate()
    token_id = setup.token(setup.create_token("t", 1)).id
    stores = [backend.open() for _ in range(8)]
    for round_ in range(5):
        barrier, admitted = threading.Barrier(len(stores)), []

        def follow(store, barrier=barrier, admitted=admitted):
            barrier.wait()
            admitted.append(store.start_following(token_id, limit, 60))

        threads = [threading.Thread(target=follow, args=(each,)) for each in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [follower for follower in admitted if follower is not None]
        assert len(winners) == limit, (round_, admitted)
        for follower in winners:
            setup.stop_following(follower)
    for each in stores:
        each.close()
    setup.close()


# -- the migrations that add run control -----------------------------------------------

def test_a_sqlite_store_at_version_3_gains_run_control_with_its_data(tmp_path):
    """Step 4 adds the cancel flag, the progress count, the followers and the CU used,
    backfilled from each token's runs; the running run is still aborted and released."""
    path = str(tmp_path / "v3.sqlite3")
    old = sqlite3.connect(path)
    old.row_factory = sqlite3.Row
    for step in SCHEMA[:3]:
        if callable(step):
            step(old)
        else:
            for statement in filter(str.strip, step.split(";")):
                old.execute(statement)
    old.execute("PRAGMA user_version = 3")
    old.execute("INSERT INTO tokens (id, name, hash, balance, created_at) "
                "VALUES (1, 'a', ?, 50, 0), (2, 'b', ?, 9, 0), (3, 'c', ?, 1, 0)",
                (token_hash("a-secret"), token_hash("b-secret"), token_hash("c-secret")))
    old.executemany(
        "INSERT INTO runs (id, token_id, status, reserved, attempts, total_cu, created_at, "
        "finished_at, worker_pid, expires_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("run_1", 1, "success", 0, 0, 4, 10, 11, 7, 99, answer("run_1", 4)),
         ("run_2", 1, "failure", 0, 0, 2, 20, 22, 7, 99, answer("run_2", 2)),
         ("run_3", 1, "running", 6, 1, 0, 30, None, GONE_PID, 10**10,
          '{"runId":"run_3","status":"running"}'),
         ("run_1", 2, "success", 0, 0, 5, 40, 41, 7, 99, answer("run_1", 5))])
    old.commit()
    old.close()
    store = SQLiteStore(path)
    store.migrate()
    with store._db.reading() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(SCHEMA)
    assert store.balance(1) == Balance(50, 6, 6)
    assert store.balance(2) == Balance(9, 0, 5)
    assert store.balance(3) == Balance(1, 0, 0)
    assert [run.run_id for run in store.list_runs(1, None, 10)] == ["run_3", "run_2", "run_1"]
    assert [(run.duration_ms, run.total_cu) for run in store.list_runs(1, "success", 10)] == \
        [(1000, 4)]
    assert store.follow("run_1", 1, -1) == (0, answer("run_1", 4))
    assert store.request_cancel("run_2", 1) == "failure"
    assert stored(store, "run_3", 1)["error"]["code"] == "ABORTED"  # its worker is gone
    assert store.balance(1) == Balance(55, 0, 7)
    assert store.start_following(1, 1, 60) is not None
    store.close()


def test_a_postgresql_store_at_migration_1_gains_run_control_with_its_data(pg_url):
    store = open_store(pg_url)
    with store._db.transaction() as db:
        db.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                   "applied_at timestamptz NOT NULL DEFAULT now())")
        for statement in filter(str.strip, MIGRATIONS[0].split(";")):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        db.execute("INSERT INTO tokens (id, name, hash, balance) VALUES (1, 'a', %s, 50), "
                   "(2, 'b', %s, 9), (3, 'c', %s, 1)",
                   (token_hash("a-secret"), token_hash("b-secret"), token_hash("c-secret")))
        db.execute("SELECT setval('tokens_id_seq', 3)")
        for run_id, token_id, status, reserved, attempts, total_cu, host in (
                ("run_1", 1, "success", 0, 0, 4, "old"), ("run_2", 1, "failure", 0, 0, 2, "old"),
                ("run_3", 1, "running", 6, 1, 0, store.host),
                ("run_1", 2, "success", 0, 0, 5, "old")):
            db.execute("INSERT INTO runs (id, token_id, status, reserved, attempts, total_cu, "
                       "finished_at, worker_host, worker_pid, expires_at, body) VALUES "
                       "(%s, %s, %s, %s, %s, %s, CASE WHEN %s = 'running' THEN NULL "
                       "ELSE now() END, %s, %s, now() + interval '1 day', %s)",
                       (run_id, token_id, status, reserved, attempts, total_cu, status, host,
                        GONE_PID, answer(run_id, total_cu)))
    store.migrate()
    assert store.balance(1) == Balance(50, 6, 6)
    assert store.balance(2) == Balance(9, 0, 5)
    assert store.balance(3) == Balance(1, 0, 0)
    assert [run.run_id for run in store.list_runs(1, None, 10)] == ["run_3", "run_2", "run_1"]
    assert store.follow("run_1", 1, -1) == (0, answer("run_1", 4))
    assert store.request_cancel("run_2", 1) == "failure"
    assert stored(store, "run_3", 1)["error"]["code"] == "ABORTED"  # its worker is gone
    assert store.balance(1) == Balance(55, 0, 7)
    assert store.start_following(1, 1, 60) is not None
    store.close()

