"""A process's connection to the SQLite store: opened on first use, forgotten after a fork.

Every gunicorn worker shares one database file in WAL mode, each through a
connection of its own. SQLite is not fork-safe, so a connection is opened on
first use (after gunicorn's fork) and a forked child forgets its parent's and
opens another. The threads of a process share its connection under one lock.

Writes run in ``BEGIN IMMEDIATE`` transactions, queued across processes (below);
SQLite's errors leave as ``StoreUnavailable``.

The writers queue on a lock file beside the database (``<path>-writer``, ``flock``)
before ``BEGIN IMMEDIATE``: a worker that finds SQLite's write lock taken otherwise
polls for it, sleeping 1, 2, 5, 10 … up to 100 ms between tries (SQLite's busy
handler), so under load a transaction of a fraction of a millisecond could wait a
hundred; the kernel hands the lock file to the next writer the moment it is released.
A writer that does not queue (an operator's ``sqlite3`` shell, a backup) is still
waited for by SQLite's busy timeout, as before; a writer that queued for a while
waits only what is left of that timeout, so a queue behind such a writer fails in
one busy timeout, not in one each. The lock file is closed with the process, so a
worker killed mid-write never holds it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator

from .contract import StoreUnavailable

_connections: weakref.WeakSet[Connection] = weakref.WeakSet()  # this process's, for the fork hook


def _reset_after_fork() -> None:
    for connection in list(_connections):
        connection._forget()


os.register_at_fork(after_in_child=_reset_after_fork)


class Connection:
    """The database at ``path``, opened on first use; ``busy_ms``: how long to wait for a
    lock; ``synchronous``: ``NORMAL`` (a commit survives the process, not a power loss)
    or ``FULL`` (it survives a power loss too, at the cost of a sync per commit)."""

    def __init__(self, path: str, busy_ms: int = 5000, synchronous: str = "NORMAL"):
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path, self.busy_seconds, self.synchronous = path, busy_ms / 1000, synchronous
        self._conn: sqlite3.Connection | None = None
        self._writer: int | None = None  # the descriptor of the writers' lock file
        self._lock = threading.RLock()
        self._checkpoint_due = False  # a large text went into the WAL unchecked
        _connections.add(self)

    def _forget(self) -> None:
        """In a forked child: the connection is the parent's; open one of its own (and its
        own descriptor of the lock file: a lock taken through a shared one is shared)."""
        if self._writer is not None:
            os.close(self._writer)
        self._conn, self._writer, self._lock = None, None, threading.RLock()

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                if os.path.dirname(self.path):
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.busy_seconds,
                                       isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
            except (OSError, sqlite3.Error) as error:
                raise StoreUnavailable(str(error)) from error
            self._conn = conn
        return self._conn

    def _queue(self) -> int:
        """This process's descriptor of the writers' lock file, opened on first use."""
        if self._writer is None:
            self._writer = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                   0o600)
        return self._writer

    def transaction(self) -> _Transaction:
        """``with connection.transaction() as db:`` a write, committed at the end."""
        return _Transaction(self)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a read, under the process lock; errors as StoreUnavailable."""
        with self._lock:
            try:
                yield self._open()
            except sqlite3.Error as error:
                raise StoreUnavailable(str(error)) from error

    # -- checkpoints ---------------------------------------------------------------

    def autocheckpoint(self, pages: int) -> None:
        """Checkpoint inside a commit that leaves the WAL past ``pages`` (0 = never)."""
        with self.reading() as db:
            db.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    @contextlib.contextmanager
    def checkpoint_deferred(self) -> Iterator[None]:
        """Commits in here skip SQLite's automatic checkpoint; ``checkpoint_if_due`` does it.

        SQLite checkpoints inside a commit that leaves the WAL past 1000 pages,
        copying the WAL into the database before the commit returns: after a
        commit of 32 MiB that copy took 150 ms.
        """
        with self._lock:
            self.autocheckpoint(0)
            try:
                yield
            finally:
                self.autocheckpoint(1000)  # SQLite's default
                self._checkpoint_due = True

    def checkpoint_if_due(self) -> None:
        """The checkpoint a ``checkpoint_deferred`` commit skipped, if one did."""
        if self._checkpoint_due:
            self._checkpoint_due = False
            with self.reading() as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- the whole file --------------------------------------------------------------

    def backup(self, target: str) -> None:
        """A consistent copy of the live database at ``target`` (SQLite's online backup)."""
        with self._lock, sqlite3.connect(target) as copy:
            self._open().backup(copy)
        copy.close()

    def close(self) -> None:
        """Close this process's connection; the next use opens another."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


# A writer that queued longer than this has its busy timeout shortened by what it waited.
QUEUE_SLACK_S = 0.01


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``), holding the process lock.

    SQLite's operational errors (locked past the busy timeout, read-only, disk
    full, file gone) leave as ``StoreUnavailable``, after a rollback.
    """

    def __init__(self, connection: Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        connection = self.connection
        connection._lock.acquire()
        self.queued: int | None = None
        self.shortened = False
        try:
            self.db = connection._open()
            self.queued = connection._queue()
            queued_at = time.monotonic()
            fcntl.flock(self.queued, fcntl.LOCK_EX)
            waited = time.monotonic() - queued_at
            if waited > QUEUE_SLACK_S:  # a busy timeout in all, queue and SQLite's lock
                left_ms = max(0, int((connection.busy_seconds - waited) * 1000))
                self.db.execute(f"PRAGMA busy_timeout={left_ms}")
                self.shortened = True
            self.db.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, OSError) as error:
            self._leave()
            raise StoreUnavailable(str(error)) from error
        except BaseException:
            self._leave()
            raise
        return self.db

    def _leave(self) -> None:
        """Out of the writers' queue and the process lock."""
        try:
            if self.shortened:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute(f"PRAGMA busy_timeout="
                                    f"{int(self.connection.busy_seconds * 1000)}")
            if self.queued is not None:
                fcntl.flock(self.queued, fcntl.LOCK_UN)
        finally:
            self.connection._lock.release()

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error as failure:
            if kind is None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise StoreUnavailable(str(failure)) from failure
        finally:
            self._leave()
        if kind is not None and issubclass(kind, sqlite3.Error):
            raise StoreUnavailable(str(error)) from error
