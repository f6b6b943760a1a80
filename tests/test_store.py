"""The store contract on both backends (a SQLite file, a PostgreSQL database): balances,
reservations, run records, crash clean-up; then what only SQLite has (its file, its
migrations, its checkpoints)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from app.store import (
    SCHEMA,
    Balance,
    DuplicateRun,
    InsufficientBalance,
    NotSupported,
    SchemaTooNew,
    SQLiteStore,
    TokenDisabled,
    TooManyRuns,
    open_store,
    token_hash,
)
from app.store import sqlite as sqlite_store

LATER = 10**9  # seconds to expiry: far in the future
DEAD = -1  # seconds to expiry: certainly dead already


def answer(run_id, total_cu):
    """A finished run's answer as the JSON text the store is given."""
    return json.dumps({"runId": run_id, "status": "success", "totalCu": total_cu})


def stored(store, run_id, token_id):
    """The stored run, parsed here (the store hands out its text)."""
    text = store.run_text(run_id, token_id)
    return None if text is None else json.loads(text)


class Backend:
    """One store backend under test: where its database is, and how to look inside."""

    def __init__(self, kind: str, url: str, tmp_path):
        self.kind, self.url, self.tmp_path = kind, url, tmp_path

    def open(self):
        """Another store on the same database, as another worker process would have."""
        return open_store(self.url)

    def seconds(self, n: int) -> str:
        """SQL for a span of ``n`` seconds, to move a stored time."""
        return str(n) if self.kind == "sqlite" else f"interval '{n} seconds'"

    def raw(self, store) -> bytes:
        """Everything the database keeps of its tokens, as bytes."""
        if self.kind == "sqlite":
            return b"".join(f.read_bytes() for f in self.tmp_path.glob("store.sqlite3*"))
        with store._db.transaction() as db:
            return "".join(row["t"] for row in db.execute(
                "SELECT t::text AS t FROM tokens t")).encode()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """Each store test runs on both backends."""
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'store.sqlite3'}", tmp_path)
    return Backend("postgresql", request.getfixturevalue("pg_url"), tmp_path)


@pytest.fixture
def store(backend):
    store = backend.open()
    store.migrate()
    yield store
    store.close()


def test_tokens_are_stored_hashed(store, backend):
    secret = store.create_token("alice", 5)
    assert store.token(secret).name == "alice"
    assert store.token("wrong") is None
    raw = backend.raw(store)  # SQLite: the database file and its WAL
    assert secret.encode() not in raw and token_hash(secret).encode() in raw


def test_migrate_is_idempotent(store):
    store.migrate()
    assert store.tokens() == []


def test_reserve_then_charge_what_was_used(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, "req", 6, LATER)
    assert store.token_by_name("t").balance == 4
    store.finish_run("run_a", token.id, "success", 2, answer("run_a", 2))
    assert store.token_by_name("t").balance == 8
    assert stored(store, "run_a", token.id)["totalCu"] == 2


def test_the_balance_counts_runs_in_flight_in_whole_numbers(store):
    """``balance`` (GET /v1/balance) in ints on both backends: PostgreSQL's sum of a
    bigint column is a numeric, which JSON would write as a string."""
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 3, LATER)
    store.start_run("run_b", token.id, None, 2, LATER)
    store.finish_run("run_b", token.id, "success", 1, answer("run_b", 1))
    found = store.balance(token.id)
    assert (found.balance, found.reserved, found.used) == (6, 3, 1)
    assert {type(found.balance), type(found.reserved), type(found.used)} == {int}


def test_short_balance_and_duplicates_change_nothing(store):
    token = store.token(store.create_token("t", 3))
    with pytest.raises(InsufficientBalance) as short:
        store.start_run("run_a", token.id, None, 4, LATER)
    assert (short.value.balance, short.value.required) == (3, 4)
    store.start_run("run_b", token.id, None, 1, LATER)
    with pytest.raises(DuplicateRun):
        store.start_run("run_b", token.id, None, 1, LATER)
    assert store.token_by_name("t").balance == 2
    assert stored(store, "run_a", token.id) is None


def test_a_disabled_token_reserves_nothing(store):
    """Its lookup may be older than the switch: the reservation reads `enabled` itself."""
    token = store.token(store.create_token("t", 5))
    store.set_enabled("t", False)
    with pytest.raises(TokenDisabled):
        store.start_run("run_a", token.id, None, 1, LATER)
    assert store.token_by_name("t").balance == 5
    assert stored(store, "run_a", token.id) is None
    store.set_enabled("t", True)
    store.start_run("run_a", token.id, None, 1, LATER)


def test_concurrent_reservations_never_overdraw(backend):
    setup = backend.open()
    setup.migrate()
    token_id = setup.token(setup.create_token("t", 100)).id
    outcomes = []

    def worker(n):
        store = backend.open()  # a connection of its own, as a separate worker has
        for i in range(20):
            try:
                store.start_run(f"run_{n}_{i}", token_id, None, 1, LATER)
                outcomes.append("ok")
            except InsufficientBalance:
                outcomes.append("short")
        store.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 100 and outcomes.count("short") == 60
    assert setup.token_by_name("t").balance == 0
    setup.close()


def test_concurrency_limit_counts_live_runs_only(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 1, LATER)
    store.start_run("run_old", token.id, None, 1, DEAD)  # certainly dead
    with pytest.raises(TooManyRuns):
        store.start_run("run_b", token.id, None, 1, LATER, max_concurrent=1)
    assert store.token_by_name("t").balance == 8  # the refused run reserved nothing
    store.finish_run("run_a", token.id, "success", 1, answer("run_a", 1))
    store.start_run("run_b", token.id, None, 1, LATER, max_concurrent=1)


def test_refusals_at_the_concurrency_limit_keep_their_order(store):
    """A token at its limit that is also disabled, or short, is refused for that first."""
    token = store.token(store.create_token("t", 3))
    store.start_run("run_a", token.id, None, 1, LATER, max_concurrent=1)
    with pytest.raises(InsufficientBalance) as short:
        store.start_run("run_b", token.id, None, 5, LATER, max_concurrent=1)
    assert (short.value.balance, short.value.required) == (2, 5)
    store.set_enabled("t", False)
    with pytest.raises(TokenDisabled):
        store.start_run("run_b", token.id, None, 1, LATER, max_concurrent=1)
    store.set_enabled("t", True)
    with pytest.raises(TooManyRuns):
        store.start_run("run_b", token.id, None, 1, LATER, max_concurrent=1)
    store.start_run("run_b", token.id, None, 1, LATER, max_concurrent=2)
    assert store.token_by_name("t").balance == 1  # the refused runs reserved nothing
    assert stored(store, "run_b", token.id)["status"] == "running"


def test_runs_of_a_dead_worker_are_aborted_and_released(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 4, LATER)
    with store._db.transaction() as db:  # as if a worker with this (unused) pid had started it
        db.execute("UPDATE runs SET worker_pid = 999999999 WHERE id = 'run_a'")
    assert store.token_by_name("t").balance == 6
    aborted = stored(store, "run_a", token.id)  # a lookup notices the worker is gone
    assert aborted["status"] == "failure" and aborted["error"]["code"] == "ABORTED"
    assert aborted["totalCu"] == 0
    assert store.token_by_name("t").balance == 10
    # the worker finishing after all changes nothing
    store.finish_run("run_a", token.id, "success", 4, answer("run_a", 4))
    assert store.token_by_name("t").balance == 10


def test_a_run_aborted_by_another_worker_is_left_as_it_is_by_its_own_finish(store, backend):
    """The worker that started a run finishes it from what it noted at the start; another
    worker may have aborted it meanwhile (taken for dead): the abort stands."""
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 4, LATER)
    other = backend.open()
    assert other.abort_run("run_a", token.id, 1)  # charged 1, the rest released
    other.close()
    store.finish_run("run_a", token.id, "success", 4, answer("run_a", 4))
    assert store.balance(token.id) == Balance(9, 0, 1)
    assert stored(store, "run_a", token.id)["error"]["code"] == "ABORTED"


def test_a_run_started_by_another_worker_is_finished_and_charged_here(store, backend):
    token = store.token(store.create_token("t", 10))
    other = backend.open()
    other.start_run("run_a", token.id, None, 4, LATER)
    assert other.reserve_more("run_a", token.id, 2)
    other.close()
    store.finish_run("run_a", token.id, "success", 5, answer("run_a", 5))
    assert store.balance(token.id) == Balance(5, 0, 5)
    assert stored(store, "run_a", token.id)["totalCu"] == 5


def test_a_finish_never_touches_a_run_that_took_the_place_of_its_pruned_row(store, backend):
    """Aborted and pruned meanwhile, a run's row may be taken by another run's (SQLite
    hands out the largest row id again): its finish must change neither."""
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 4, LATER)
    other = backend.open()
    assert other.abort_run("run_a", token.id, 0)
    with other._db.transaction() as db:
        db.execute(f"UPDATE runs SET created_at = created_at - {backend.seconds(7200)}")
    assert other.prune(3600) == 1
    other.start_run("run_b", token.id, None, 3, LATER)
    store.finish_run("run_a", token.id, "success", 4, answer("run_a", 4))
    assert store.balance(token.id) == Balance(7, 3, 0)
    assert stored(store, "run_b", token.id)["status"] == "running"
    other.finish_run("run_b", token.id, "success", 2, answer("run_b", 2))
    assert store.balance(token.id) == Balance(8, 0, 2)
    other.close()


def test_runs_never_finished_here_leave_no_notes_past_a_bound(tmp_path, monkeypatch):
    """The SQLite store notes the runs its process started, to finish them without
    reading their rows; runs it never finishes cannot make the notes grow for ever."""
    monkeypatch.setattr(sqlite_store, "MAX_HELD", 3)
    store = SQLiteStore(str(tmp_path / "store.sqlite3"))
    store.migrate()
    token = store.token(store.create_token("t", 100))
    for i in range(8):
        store.start_run(f"run_{i}", token.id, None, 5, LATER)
        assert len(store._held) <= 3
    for i in range(8):
        store.finish_run(f"run_{i}", token.id, "success", i % 3, answer(f"run_{i}", i % 3))
    assert store.balance(token.id) == Balance(100 - 7, 0, 7)  # 0 + 1 + 2 + 0 + 1 + 2 + 0 + 1
    store.close()


def test_a_lookup_aborts_a_dead_workers_run_charging_its_started_attempts(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 4, LATER)
    store.record_attempts("run_a", token.id, 3)
    store.record_attempts("run_a", token.id, 1)  # an older count never lowers it
    with store._db.transaction() as db:
        db.execute("UPDATE runs SET worker_pid = 999999999 WHERE id = 'run_a'")
    assert stored(store, "run_a", token.id)["totalCu"] == 3
    assert store.token_by_name("t").balance == 7


@pytest.mark.parametrize(("recorded", "given", "charged"),
                         [(0, None, 0), (2, None, 2), (2, 3, 3), (3, 1, 3), (2, 9, 5)])
def test_abort_run_charges_the_started_attempts_within_the_reservation(
        store, recorded, given, charged):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 5, LATER)
    store.record_attempts("run_a", token.id, recorded)
    assert store.abort_run("run_a", token.id, given)
    body = stored(store, "run_a", token.id)
    assert (body["status"], body["error"]["code"], body["totalCu"]) == (
        "failure", "ABORTED", charged)
    assert store.token_by_name("t").balance == 10 - charged
    assert not store.abort_run("run_a", token.id, 5)  # once only
    assert store.token_by_name("t").balance == 10 - charged


def test_a_dead_worker_and_a_crash_charge_the_stored_attempts(store):
    import os

    token = store.token(store.create_token("t", 20))
    store.start_run("run_exited", token.id, None, 5, LATER)
    store.record_attempts("run_exited", token.id, 2)
    store.start_run("run_expired", token.id, None, 5, DEAD)
    store.record_attempts("run_expired", token.id, 4)
    assert store.abort_orphans() == 1
    assert store.abort_runs_of_worker(os.getpid()) == 1
    assert stored(store, "run_exited", token.id)["totalCu"] == 2
    assert stored(store, "run_expired", token.id)["totalCu"] == 4
    assert store.token_by_name("t").balance == 14


def test_run_ids_are_unique_per_token(store):
    alice = store.token(store.create_token("alice", 10))
    bob = store.token(store.create_token("bob", 10))
    store.start_run("run_invoice_1", alice.id, None, 1, LATER)
    store.start_run("run_invoice_1", bob.id, None, 2, LATER)  # not blocked by alice's
    with pytest.raises(DuplicateRun):
        store.start_run("run_invoice_1", alice.id, None, 1, LATER)
    store.finish_run("run_invoice_1", bob.id, "success", 2, '{"b":2}')
    assert store.run_text("run_invoice_1", bob.id) == '{"b":2}'
    assert stored(store, "run_invoice_1", alice.id)["status"] == "running"  # untouched
    store.finish_run("run_invoice_1", alice.id, "success", 1, '{"a":1}')
    assert store.run_text("run_invoice_1", alice.id) == '{"a":1}'
    assert (store.token_by_name("alice").balance, store.token_by_name("bob").balance) == (9, 8)
    assert store.abort_run("run_invoice_1", alice.id) is False  # finished: nothing to abort


def test_run_text_is_the_text_stored(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 1, LATER)
    text = '{"runId": "run_a",  "status":"success", "totalCu":1, "x": 1.50}'  # as written
    store.finish_run("run_a", token.id, "success", 1, text)
    assert store.run_text("run_a", token.id) == text
    assert store.run_text("run_a", token.id + 1) is None


def test_a_run_just_started_reads_in_the_answers_shape(store):
    """Before its first partial state, a run in flight is read (and followed) in the
    shape of an answer: nothing run yet."""
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 1, LATER)
    body = {"runId": "run_a", "status": "running", "durationMs": 0, "totalCu": 0,
            "error": None, "executionState": {}}
    assert stored(store, "run_a", token.id) == body
    assert json.loads(store.follow("run_a", token.id, -1)[1]) == body


def test_a_run_keeps_its_graph_for_its_token_only(store):
    token = store.token(store.create_token("t", 10))
    graph = '{"deadlineMs":60000,"nodes":{"root":{"type":"manual"}}}'
    store.start_run("run_a", token.id, None, 1, LATER, graph=graph)
    store.start_run("run_b", token.id, None, 1, LATER)
    store.finish_run("run_a", token.id, "success", 1, answer("run_a", 1))
    assert store.run_graph("run_a", token.id) == graph  # kept once finished
    assert store.run_graph("run_b", token.id) == "null"  # none given
    assert store.run_graph("run_a", token.id + 1) is None
    assert store.run_graph("run_c", token.id) is None


def test_abort_runs_of_an_exited_worker(store):
    import os

    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 3, LATER)
    assert store.abort_runs_of_worker(os.getpid()) == 1
    body = stored(store, "run_a", token.id)
    assert body == {"runId": "run_a", "status": "failure", "durationMs": body["durationMs"],
                    "totalCu": 0, "error": {"code": "ABORTED", "message": "The worker running "
                                            "this run stopped before the run finished."},
                    "executionState": {}}
    assert store.abort_runs_of_worker(os.getpid()) == 0


def test_prune_deletes_finished_runs_past_retention(store, backend):
    token = store.token(store.create_token("t", 10))
    for run_id in ("run_old", "run_new", "run_live"):
        store.start_run(run_id, token.id, None, 1, LATER)
    for run_id in ("run_old", "run_new"):
        store.finish_run(run_id, token.id, "success", 1, answer(run_id, 1))
    with store._db.transaction() as db:
        db.execute(f"UPDATE runs SET created_at = created_at - {backend.seconds(7200)} "
                   "WHERE id != 'run_new'")
    assert store.prune(3600) == 1
    assert stored(store, "run_old", token.id) is None
    assert stored(store, "run_new", token.id) and stored(store, "run_live", token.id)


def test_stored_body_round_trips(store):
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 1, LATER)
    body = {"runId": "run_a", "status": "success", "totalCu": 1, "executionState": {"é": [1]}}
    text = json.dumps(body, ensure_ascii=False)  # non-ASCII as is, as answers write it
    store.finish_run("run_a", token.id, "success", 1, text)
    assert store.run_text("run_a", token.id) == text
    assert stored(store, "run_a", token.id) == body


def test_a_postgresql_store_refuses_backup_pointing_to_its_own_tools(pg_url, tmp_path):
    store = open_store(pg_url)
    with pytest.raises(NotSupported, match="pg_dump"):
        store.backup(str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()


# -- SQLite only -------------------------------------------------------------------

def test_backup_is_a_consistent_copy(tmp_path):
    store = SQLiteStore(str(tmp_path / "store.sqlite3"))
    store.migrate()
    token = store.token(store.create_token("t", 10))
    store.start_run("run_a", token.id, None, 1, LATER)
    store.backup(str(tmp_path / "copy.sqlite3"))
    copy = SQLiteStore(str(tmp_path / "copy.sqlite3"))
    assert copy.token_by_name("t").balance == 9
    assert stored(copy, "run_a", token.id)["status"] == "running"
    copy.close()
    store.close()


FIRST_SCHEMA = """
CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE,
    balance INTEGER NOT NULL CHECK (balance >= 0), enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL);
CREATE TABLE runs (id TEXT PRIMARY KEY, token_id INTEGER NOT NULL REFERENCES tokens(id),
    request_id TEXT, status TEXT NOT NULL, reserved INTEGER NOT NULL,
    total_cu INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, finished_at REAL,
    body TEXT NOT NULL);
CREATE INDEX runs_created_at ON runs (created_at);
PRAGMA user_version = 1;
"""


def test_a_store_made_by_the_first_schema_is_upgraded_with_its_data(tmp_path):
    """Migration 1 gained columns after its first version had made stores: nothing is lost,
    its running run is aborted with its reservation released, and runs work again."""
    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as old:
        old.executescript(FIRST_SCHEMA)
        old.execute("INSERT INTO tokens (id, name, hash, balance, created_at) "
                    "VALUES (1, 't', ?, 7, 0)", (token_hash("s3cret"),))
        old.execute("INSERT INTO runs VALUES ('run_done', 1, 'r1', 'success', 0, 2, 1, 2, "
                    "'{\"runId\": \"run_done\", \"status\": \"success\", \"totalCu\": 2}')")
        old.execute("INSERT INTO runs VALUES ('run_left', 1, 'r2', 'running', 3, 0, 1, NULL, "
                    "'{\"runId\": \"run_left\", \"status\": \"running\"}')")
    old.close()
    store = SQLiteStore(path)
    store.migrate()
    store.migrate()  # and again: nothing more to do
    assert stored(store, "run_done", 1)["totalCu"] == 2
    assert store.abort_orphans() == 1
    assert stored(store, "run_left", 1)["error"]["code"] == "ABORTED"
    assert store.token("s3cret").balance == 10  # 7 + the 3 reserved by the dead run
    store.start_run("run_new", 1, "r3", 2, LATER)
    store.finish_run("run_new", 1, "success", 1, answer("run_new", 1))
    assert store.token("s3cret").balance == 9
    store.check_writable()  # the probes table exists
    store.close()


def test_a_store_at_version_2_keeps_its_runs_and_scopes_run_ids_per_token(tmp_path):
    """Migration 3 rebuilds the runs table (a row id, runId unique per token): every row
    and column is kept, and the running run is still aborted and released."""
    path = str(tmp_path / "v2.sqlite3")
    old = sqlite3.connect(path)
    old.row_factory = sqlite3.Row
    for statement in filter(str.strip, SCHEMA[0].split(";")):
        old.execute(statement)
    SCHEMA[1](old)
    old.execute("PRAGMA user_version = 2")
    old.execute("INSERT INTO tokens (id, name, hash, balance, created_at) "
                "VALUES (1, 'a', ?, 7, 0), (2, 'b', ?, 5, 0)",
                (token_hash("a-secret"), token_hash("b-secret")))
    old.execute("INSERT INTO runs (id, token_id, request_id, status, reserved, total_cu, "
                "created_at, finished_at, worker_pid, expires_at, body) VALUES "
                "('run_done', 1, 'r1', 'success', 0, 2, 1, 2, 11, 99, '{\"done\": 1}'), "
                "('run_left', 1, 'r2', 'running', 3, 0, 3, NULL, 999999999, ?, "
                "'{\"runId\": \"run_left\", \"status\": \"running\"}')", (10**10,))
    old.commit()
    old.close()
    store = SQLiteStore(path)
    store.migrate()
    with store._db.reading() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(SCHEMA) == 5
        done = db.execute("SELECT * FROM runs WHERE id = 'run_done'").fetchone()
        assert dict(done) == {**dict(done), "token_id": 1, "request_id": "r1",
                              "status": "success", "total_cu": 2, "created_at": 1,
                              "finished_at": 2, "worker_pid": 11, "expires_at": 99,
                              "attempts": 0}
    assert store.run_text("run_done", 1) == '{"done": 1}'
    assert store.run_text("run_done", 2) is None
    store.start_run("run_done", 2, None, 1, LATER)  # another token's id no longer blocks
    with pytest.raises(DuplicateRun):
        store.start_run("run_done", 1, None, 1, LATER)
    assert stored(store, "run_left", 1)["error"]["code"] == "ABORTED"  # its worker is gone
    assert store.token("a-secret").balance == 10 and store.token("b-secret").balance == 4
    store.close()


def test_a_store_at_version_4_gains_graphs_null_for_its_runs(tmp_path):
    path = str(tmp_path / "v4.sqlite3")
    old = sqlite3.connect(path)
    old.row_factory = sqlite3.Row
    with old:
        for number, step in enumerate(SCHEMA[:4], start=1):
            if callable(step):
                step(old)
            else:
                for statement in filter(str.strip, step.split(";")):
                    old.execute(statement)
            old.execute(f"PRAGMA user_version = {number}")
        old.execute("INSERT INTO tokens (id, name, hash, balance, created_at) "
                    "VALUES (1, 'a', 'h', 7, 0)")
        old.execute("INSERT INTO runs (id, token_id, status, reserved, created_at, body) "
                    "VALUES ('run_done', 1, 'success', 0, 1, '{\"done\": 1}')")
    old.close()
    store = SQLiteStore(path)
    store.migrate()
    assert store.run_graph("run_done", 1) == "null"
    assert store.run_text("run_done", 1) == '{"done": 1}'
    store.start_run("run_new", 1, None, 1, LATER, graph='{"nodes":{}}')
    assert store.run_graph("run_new", 1) == '{"nodes":{}}'
    store.close()


def test_a_large_answer_is_checkpointed_before_the_next_run_not_in_its_own_commit(tmp_path):
    path = tmp_path / "runner.sqlite3"
    store = SQLiteStore(str(path))
    store.migrate()
    token = store.ensure_token("t", "secret", 100)
    store.start_run("run_big", token.id, None, 1, 60)
    store.finish_run("run_big", token.id, "success", 1, "x" * 5_000_000)
    # The commit that ends a run (after its deadline) only appended to the WAL...
    assert path.stat().st_size < 1_000_000
    store.start_run("run_next", token.id, None, 1, 60)
    # ...and the next run's start had the process's checkpoint thread copy it into the
    # database, beside that run.
    deadline = time.monotonic() + 10
    while path.stat().st_size < 5_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.stat().st_size > 5_000_000
    assert store.run_text("run_big", token.id) == "x" * 5_000_000


def test_a_store_migrated_by_newer_code_is_refused(tmp_path):
    path = str(tmp_path / "newer.sqlite3")
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {len(SCHEMA) + 1}")
    newer.close()
    store = SQLiteStore(path)
    with pytest.raises(SchemaTooNew, match=f"version {len(SCHEMA) + 1}, newer"):
        store.migrate()
    store.close()


def test_abort_run_of_mine_leaves_a_run_another_process_started(store, backend):
    token = store.token(store.create_token("alice", 10))
    store.start_run("run_a", token.id, None, 3, LATER)
    mark = "?" if backend.kind == "sqlite" else "%s"
    with store._db.transaction() as db:  # as if another (live) worker had started it
        db.execute(f"UPDATE runs SET worker_pid = 1 WHERE id = {mark}", ("run_a",))
    assert store.abort_run("run_a", token.id, 0, mine=True) is False
    assert store.token_by_name("alice").balance == 7  # still reserved
    assert store.abort_run("run_a", token.id, 0) is True
    assert store.token_by_name("alice").balance == 10


@pytest.mark.parametrize(("setting", "pragma"), [("NORMAL", 1), ("FULL", 2)])
def test_sqlites_durability_is_a_setting(tmp_path, setting, pragma):
    """SPEC §13: RUNNER_SQLITE_SYNCHRONOUS=FULL keeps answered runs through a power loss."""
    from app.factory import create_app

    app = create_app({"STORE_PATH": str(tmp_path / "s.sqlite3"), "LOG_FILE": "",
                      "SQLITE_SYNCHRONOUS": setting})
    store = app.extensions["store"]
    with store._db.reading() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    store.close()
