"""What only the PostgreSQL store has: migrations under an advisory lock, several
processes (as several hosts) on one database, runs judged by their host."""
from __future__ import annotations

import multiprocessing
import socket

import pytest

from app.store import InsufficientBalance, SchemaTooNew, open_store
from app.store.postgres import PostgresStore
from app.store.postgres_schema import MIGRATIONS

LATER = 10**9


def _migrate(url, barrier, results):
    barrier.wait()
    store = open_store(url)
    store.migrate()
    results.put(True)
    store.close()


def _reserve(url, token_id, barrier, n, results):
    store = open_store(url)
    barrier.wait()
    ok = 0
    for i in range(40):
        try:
            store.start_run(f"run_{n}_{i}", token_id, None, 1, LATER)
            ok += 1
        except InsufficientBalance:
            pass
    results.put(ok)
    store.close()


def _sweep(url, host, barrier, results):
    store = PostgresStore(url, host=host)
    barrier.wait()
    results.put(store.abort_orphans())
    store.close()


def _in_processes(target, count, arguments):
    """Run ``target(*arguments(n, barrier, results))`` in ``count`` fresh processes that
    start at once; what each put in ``results``."""
    spawn = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    barrier, results = spawn.Barrier(count), spawn.Queue()
    processes = [spawn.Process(target=target, args=arguments(n, barrier, results))
                 for n in range(count)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    assert [process.exitcode for process in processes] == [0] * count
    return outcomes


def test_migrations_are_applied_once_when_several_hosts_start_at_once(pg_url):
    _in_processes(_migrate, 6, lambda n, barrier, results: (pg_url, barrier, results))
    store = open_store(pg_url)
    with store._db.transaction() as db:
        versions = [row["version"] for row in db.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    store.migrate()  # and again: nothing to do
    store.close()


def test_a_database_migrated_by_newer_code_is_refused(pg_url):
    store = open_store(pg_url)
    store.migrate()
    with store._db.transaction() as db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNew, match=f"version {len(MIGRATIONS) + 1}, newer"):
        store.migrate()
    store.close()


def test_a_database_at_migration_2_gains_graphs_null_for_its_runs(pg_url):
    store = open_store(pg_url)
    with store._db.transaction() as db:  # as the code of migration 2 left it
        db.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                   "applied_at timestamptz NOT NULL DEFAULT now())")
        for number, step in enumerate(MIGRATIONS[:2], start=1):
            for statement in filter(str.strip, step.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        db.execute("INSERT INTO tokens (id, name, hash, balance) VALUES (1, 'a', 'h', 7)")
        db.execute("INSERT INTO runs (id, token_id, status, reserved, worker_host, worker_pid, "
                   "expires_at, body) VALUES ('run_done', 1, 'success', 0, 'h', 1, now(), "
                   "'{\"done\": 1}')")
    store.migrate()
    assert store.run_graph("run_done", 1) == "null"
    assert store.run_text("run_done", 1) == '{"done": 1}'
    store.close()


def test_concurrent_reservations_across_processes_never_go_below_zero(pg_url):
    setup = open_store(pg_url)
    setup.migrate()
    token_id = setup.token(setup.create_token("t", 100)).id
    granted = _in_processes(_reserve, 5, lambda n, barrier, results: (
        pg_url, token_id, barrier, n, results))
    assert sum(granted) == 100 and setup.token_by_name("t").balance == 0
    setup.close()


def test_a_host_is_named_by_its_setting_or_its_host_name(pg_url):
    """Hosts sharing a host name but not their pids (containers on the host's network)
    are told apart by RUNNER_HOST_ID, as the store's ``host``."""
    assert open_store(pg_url, host="host-a").host == "host-a"
    assert open_store(pg_url).host == socket.gethostname()


def test_a_dead_worker_of_another_host_is_judged_by_its_expiry_only(pg_url):
    here, there = PostgresStore(pg_url, host="a"), PostgresStore(pg_url, host="b")
    here.migrate()
    token = here.token(here.create_token("t", 10))
    here.start_run("run_live", token.id, None, 3, LATER)
    here.start_run("run_expired", token.id, None, 3, -1)
    with here._db.transaction() as db:  # as if started by a worker now gone
        db.execute("UPDATE runs SET worker_pid = 999999999")
    assert there.abort_orphans() == 1  # the expired one; the other's pid means nothing there
    assert '"running"' in there.run_text("run_live", token.id)
    assert there.abort_runs_of_worker(999999999) == 0
    assert here.abort_orphans() == 1  # its own host knows the worker is gone
    assert here.token_by_name("t").balance == 10
    here.close()
    there.close()


def test_sweeps_of_several_hosts_at_once_abort_each_run_once(pg_url):
    setup = open_store(pg_url)
    setup.migrate()
    token = setup.token(setup.create_token("t", 100))
    for i in range(30):
        setup.start_run(f"run_{i}", token.id, None, 2, -1)
        setup.record_attempts(f"run_{i}", token.id, 1)
    aborted = _in_processes(_sweep, 4, lambda n, barrier, results: (
        pg_url, f"host-{n}", barrier, results))
    assert sum(aborted) == 30
    assert setup.token_by_name("t").balance == 70  # one started attempt each
    setup.close()


def test_run_answers_are_compressed_with_lz4_where_the_server_has_it(pg_url):
    """Migration 5: pglz took 2.4 s to store a 32 MiB answer of JSON numbers, lz4 0.4 s
    (tests/test_limits.py measures the whole run). Answers stored before read the same."""
    store = open_store(pg_url)
    store.migrate()
    with store._db.transaction() as db:
        has_lz4 = db.execute("SELECT 'lz4' = ANY (enumvals) AS has FROM pg_settings "
                             "WHERE name = 'default_toast_compression'").fetchone()
        method = db.execute("SELECT attcompression FROM pg_attribute WHERE attname = 'body' "
                            "AND attrelid = 'runs'::regclass").fetchone()["attcompression"]
    store.close()
    # Debian's PostgreSQL 14 and later has it; elsewhere the migration changes nothing.
    assert method == ("l" if has_lz4 and has_lz4["has"] else "")
