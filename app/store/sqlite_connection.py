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
        # The transactions' cursor: every write statement goes through it (a cursor made
        # per statement, as sqlite3.Connection.execute does, costs more than the statement).
        self._cursor: sqlite3.Cursor | None = None
        self._writer: int | None = None  # the descriptor of the writers' lock file
        self._lock = threading.RLock()
        self._commits = 0  # since the last checkpoint
        self._checkpoint_due = False  # a large text went into the WAL since
        self._checkpointer: sqlite3.Connection | None = None  # the checkpoints' connection
        self._checkpointing: threading.Thread | None = None
        self._checkpoint_lock = threading.Lock()
        # Transactions of a process take turns under its lock: one object serves them all.
        self._transaction = _Transaction(self)
        _connections.add(self)

    def _forget(self) -> None:
        """In a forked child: the connection is the parent's; open one of its own (and its
        own descriptor of the lock file: a lock taken through a shared one is shared)."""
        if self._writer is not None and self._writer >= 0:
            os.close(self._writer)
        self._conn, self._cursor, self._writer = None, None, None
        self._lock = threading.RLock()
        self._checkpointer = self._checkpointing = None
        self._checkpoint_lock = threading.Lock()

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
                conn.execute("PRAGMA wal_autocheckpoint=0")  # see "checkpoints" below
            except (OSError, sqlite3.Error) as error:
                raise StoreUnavailable(str(error)) from error
            self._conn, self._cursor = conn, conn.cursor()
        return self._conn

    def _queue(self) -> int:
        """This process's descriptor of the writers' lock file, opened on first use; -1
        when it cannot be opened (SQLite's busy timeout alone then orders the writers).

        Opened for reading (``flock`` needs no more) and made readable by all: a store
        made by root and then given to the service's user leaves it root's."""
        if self._writer is None:
            try:
                self._writer = os.open(f"{self.path}-writer",
                                       os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                self._writer = -1
        return self._writer

    def transaction(self) -> _Transaction:
        """``with connection.transaction() as db:`` a write (``db``: a cursor), committed
        at the end."""
        return self._transaction

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a read, under the process lock; errors as StoreUnavailable."""
        with self._lock:
            try:
                yield self._open()
            except sqlite3.Error as error:
                raise StoreUnavailable(str(error)) from error

    # -- checkpoints ---------------------------------------------------------------
    # SQLite's own checkpoint runs inside a commit that leaves the WAL past 1000 pages:
    # that commit copies the WAL into the database and syncs it (20–30 ms here; 150 ms
    # after a 32 MiB answer) while holding the writers' queue, so every writer behind it
    # waited too. It is off (``wal_autocheckpoint=0``): every CHECKPOINT_EVERY commits
    # of this process (and at the start of its next run after a large text: not while
    # its answer is being sent), a thread of its own checkpoints on a connection of its
    # own, beside the requests (PASSIVE: it never blocks a writer).

    def _committed(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY:
            self.checkpoint_soon()

    def checkpoint_soon(self) -> None:
        """Copy the WAL into the database in the background (unless a copy is under way)."""
        self._commits = 0
        with self._checkpoint_lock:
            if self._checkpointing is not None and self._checkpointing.is_alive():
                return
            self._checkpointing = threading.Thread(target=self._checkpoint, daemon=True,
                                                   name="sqlite-checkpoint")
            self._checkpointing.start()

    def checkpoint_later(self) -> None:
        """A large text went into the WAL: ``checkpoint_if_due`` copies it."""
        self._checkpoint_due = True

    def checkpoint_if_due(self) -> None:
        if self._checkpoint_due:
            self._checkpoint_due = False
            self.checkpoint_soon()

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # the next one tries again
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, timeout=self.busy_seconds,
                                                     isolation_level=None,
                                                     check_same_thread=False)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

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
            self._conn = self._cursor = None


CHECKPOINT_EVERY = 64  # commits of a process between two of its checkpoints
# A writer that queued longer than this has its busy timeout shortened by what it waited.
QUEUE_SLACK_S = 0.01


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``), holding the process lock.

    SQLite's operational errors (locked past the busy timeout, read-only, disk
    full, file gone) leave as ``StoreUnavailable``, after a rollback.
    """

    def __init__(self, connection: Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Cursor:
        connection = self.connection
        connection._lock.acquire()
        self.queued: int | None = None
        self.shortened = False
        try:
            self.db = connection._conn or connection._open()
            queue = connection._queue() if connection._writer is None else connection._writer
            if queue >= 0:
                queued_at = time.monotonic()
                fcntl.flock(queue, fcntl.LOCK_EX)
                self.queued = queue
                waited = time.monotonic() - queued_at
                if waited > QUEUE_SLACK_S:  # a busy timeout in all, queue and SQLite's lock
                    left_ms = max(0, int((connection.busy_seconds - waited) * 1000))
                    self.db.execute(f"PRAGMA busy_timeout={left_ms}")
                    self.shortened = True
            self.cursor = cursor = connection._cursor
            cursor.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, OSError) as error:
            self._leave()
            raise StoreUnavailable(str(error)) from error
        except BaseException:
            self._leave()
            raise
        return cursor

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
                self.cursor.execute("COMMIT")
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error as failure:
            if kind is None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise StoreUnavailable(str(failure)) from failure
        finally:
            self._leave()
        if kind is None:  # committed
            self.connection._committed()
        elif issubclass(kind, sqlite3.Error):
            raise StoreUnavailable(str(error)) from error
