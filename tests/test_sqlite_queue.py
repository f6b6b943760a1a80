"""The SQLite store's writers queue on a lock file (app/store/sqlite_connection.py): a
writer waits for the one before it without polling, and a queue behind a writer that
does not queue fails within one busy timeout, not one each."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.store.contract import StoreUnavailable
from app.store.sqlite_connection import CHECKPOINT_EVERY, Connection


def _write(connection: Connection, value: int) -> None:
    with connection.transaction() as db:
        db.execute("INSERT INTO t VALUES (?)", (value,))


@pytest.fixture
def path(tmp_path):
    path = str(tmp_path / "q.sqlite3")
    with Connection(path).transaction() as db:
        db.execute("CREATE TABLE t (v INTEGER)")
    return path


def test_a_writer_waits_in_the_queue_until_the_one_before_it_commits(path):
    first, second = Connection(path), Connection(path)  # two processes' worth: two locks
    entered, release = threading.Event(), threading.Event()
    order = []

    def hold() -> None:
        with first.transaction() as db:
            db.execute("INSERT INTO t VALUES (1)")
            entered.set()
            release.wait(10)
            order.append("first commits")

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    waiter = threading.Thread(target=lambda: (_write(second, 2), order.append("second")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # queued, not failed nor through
    release.set()
    holder.join(10)
    waiter.join(10)
    assert order == ["first commits", "second"]
    with first.reading() as db:
        assert [row[0] for row in db.execute("SELECT v FROM t ORDER BY v")] == [1, 2]


def test_writers_queue_on_the_lock_file_beside_the_database(path):
    """The queue is the lock file's: held by another process, a writer waits for it even
    though SQLite's own lock is free (it does not poll SQLite meanwhile)."""
    holder = os.open(f"{path}-writer", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    waiter = threading.Thread(target=_write, args=(Connection(path), 1))
    try:
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    waiter.join(10)
    with Connection(path).reading() as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_the_queue_holds_no_lock_once_a_transaction_fails(path):
    connection = Connection(path)
    with pytest.raises(ZeroDivisionError), connection.transaction() as db:
        db.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    _write(Connection(path), 2)  # another writer gets through at once
    with connection.reading() as db:
        assert [row[0] for row in db.execute("SELECT v FROM t")] == [2]


def test_a_queue_behind_a_writer_that_does_not_queue_fails_in_one_busy_timeout(path):
    """An operator's shell holds SQLite's write lock: four queued writers with a busy
    timeout of 1 s all fail by about 1 s (each waiting its own would take 4 s)."""
    outsider = sqlite3.connect(path, isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    try:
        writers = [Connection(path, busy_ms=1000) for _ in range(4)]
        started = time.monotonic()

        def attempt(connection: Connection) -> float:
            with pytest.raises(StoreUnavailable):
                _write(connection, 1)
            return time.monotonic() - started

        with ThreadPoolExecutor(4) as pool:
            failed_after = list(pool.map(attempt, writers))
    finally:
        outsider.execute("ROLLBACK")
        outsider.close()
    assert max(failed_after) < 2.5, failed_after
    for writer in writers:  # and each has its whole busy timeout again
        with writer.reading() as db:
            assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 1000
    _write(writers[0], 3)


def test_commits_do_not_checkpoint_a_thread_of_the_process_does_every_64(path):
    """SQLite's own checkpoint would copy the WAL into the database inside a commit,
    holding the queue: the database file grows only when the process's checkpoint
    thread copies the WAL, after its 64th commit."""
    connection = Connection(path)
    _write(connection, 0)
    size = os.path.getsize(path)
    for value in range(CHECKPOINT_EVERY - 2):
        with connection.transaction() as db:
            db.execute("INSERT INTO t VALUES (?)", (value,))
            db.execute("CREATE TABLE IF NOT EXISTS pad (p TEXT)")
            # 62 × 70 kB: past the 1000 pages at which SQLite would checkpoint
            db.execute("INSERT INTO pad VALUES (?)", ("x" * 70_000,))
    assert os.path.getsize(path) == size  # everything is still in the WAL
    _write(connection, 1)  # the 64th
    deadline = time.monotonic() + 10
    while os.path.getsize(path) == size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.getsize(path) > size
    with Connection(path).reading() as db:
        assert db.execute("SELECT COUNT(*) FROM pad").fetchone()[0] == CHECKPOINT_EVERY - 2


def test_the_lock_file_is_readable_by_the_service_user_and_writes_go_on_without_it(tmp_path):
    """Made readable by all (flock needs no more), so a store root made and gave to the
    service's user still queues; a lock file that cannot be opened at all leaves the
    writers to SQLite's busy timeout, as before the queue."""
    path = str(tmp_path / "a.sqlite3")
    with Connection(path).transaction() as db:
        db.execute("CREATE TABLE t (v INTEGER)")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(f"{path}-writer").st_mode & 0o777 == 0o644 & ~umask
    other = str(tmp_path / "b.sqlite3")
    os.mkdir(f"{other}-writer")  # a lock file no one can open
    with Connection(other).transaction() as db:
        db.execute("CREATE TABLE t (v INTEGER)")
    _write(Connection(other), 1)
    with Connection(other).reading() as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_threads_of_a_process_take_turns_with_its_transactions(path):
    """A process's threads share its connection (one transaction object, one cursor):
    each transaction is whole, its statements and its commit or rollback its own."""
    connection = Connection(path)
    failures = []

    def writer(n: int) -> None:
        for i in range(50):
            try:
                with connection.transaction() as db:
                    db.execute("INSERT INTO t VALUES (?)", (n * 1000 + i,))
                    time.sleep(0)  # let another thread try to come in
                    assert db.execute("SELECT COUNT(*) FROM t WHERE v = ?",
                                      (n * 1000 + i,)).fetchone()[0] == 1
                    if i % 5 == 0:
                        raise ZeroDivisionError  # rolled back: its row is not kept
            except ZeroDivisionError:
                pass
            except Exception as error:  # reported below
                failures.append(error)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    assert failures == []
    with connection.reading() as db:
        kept = {row[0] for row in db.execute("SELECT v FROM t")}
    assert kept == {n * 1000 + i for n in range(8) for i in range(50) if i % 5}
