"""A process's connections to the PostgreSQL store: a pool opened on first use, forgotten
after a fork.

A connection opened before gunicorn forks must not be used by the workers (they would
share its socket), so each process opens its own small pool on first use, and a forked
child forgets its parent's: it neither uses nor closes it (psycopg never closes a
connection from a process that did not open it). The threads of a process share the
pool. Connections are in autocommit mode: ``statement()`` runs one statement as its own
transaction (one round trip), ``transaction()`` several in one.

Waiting for a connection or a row lock is bounded by ``busy_ms`` (psycopg_pool's
timeout, PostgreSQL's ``lock_timeout``); that, and a server that cannot be reached
or written, leaves as ``StoreUnavailable`` with a one-line reason.

A pool is opened only once one plain connection has succeeded: a pool that cannot
connect retries in the background, logging each attempt, while its caller waits out
the whole timeout, where one connection fails at once with the server's own reason
(a command, or a worker starting while the database is down, says so in one line).
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .contract import StoreUnavailable

# A sync worker serves one request at a time; its node threads note progress meanwhile.
MAX_CONNECTIONS = 4

_pools: weakref.WeakSet[Pool] = weakref.WeakSet()  # this process's, for the fork hook
_inherited: list[ConnectionPool] = []  # a parent's pools, never used or closed in a child


def _reset_after_fork() -> None:
    for pool in list(_pools):
        pool._forget()


os.register_at_fork(after_in_child=_reset_after_fork)

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError,
                psycopg.errors.ReadOnlySqlTransaction, PoolTimeout)


class Pool:
    """The database at ``url``, through a pool opened on first use."""

    def __init__(self, url: str, busy_ms: int = 5000):
        self.url, self.busy_ms = url, busy_ms
        self._pool: ConnectionPool | None = None
        self._held: psycopg.Connection | None = None  # the main thread's (``statement``)
        self._lock = threading.Lock()
        _pools.add(self)

    def _forget(self) -> None:
        """In a forked child: the pool is the parent's; open one of its own."""
        if self._pool is not None:
            _inherited.append(self._pool)
        self._pool, self._held, self._lock = None, None, threading.Lock()

    def _open(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                seconds = self.busy_ms / 1000
                settings = {"row_factory": dict_row, "connect_timeout": max(2, round(seconds)),
                            "options": f"-c lock_timeout={self.busy_ms}", "autocommit": True}
                psycopg.connect(self.url, **settings).close()  # reachable: see above
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=MAX_CONNECTIONS, timeout=seconds,
                    open=False, name="store", kwargs=settings)
                self._pool.open(wait=False)
            return self._pool

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """``with pool.transaction() as db:`` committed at the end, rolled back on an error."""
        try:
            with self._open().connection() as db, db.transaction():
                yield db
        except _UNAVAILABLE as error:
            raise StoreUnavailable(_reason(error)) from error

    def statement(self, sql: str, params: tuple = ()) -> tuple[list[dict], int]:
        """One statement as its own transaction (one round trip): its rows and how many
        rows it changed.

        The main thread (a sync worker's requests) keeps one connection of the pool for
        its statements rather than taking and giving one back each time; a connection
        that fails goes back to the pool, which drops it if it is broken.
        """
        main = threading.current_thread() is threading.main_thread()
        db = self._held if main else None
        try:
            if db is None:
                if not main:
                    with self._open().connection() as db:
                        return _rows(db.execute(sql, params))
                db = self._held = self._open().getconn()
            return _rows(db.execute(sql, params))
        except _UNAVAILABLE as error:
            if main and self._held is not None:
                self._held = None
                self._pool.putconn(db)
            raise StoreUnavailable(_reason(error)) from error

    def close(self) -> None:
        """Close this process's pool; the next use opens another."""
        with self._lock:
            if self._pool is not None:
                if self._held is not None:
                    self._pool.putconn(self._held)
                self._pool.close()
            self._pool, self._held = None, None


def _rows(cursor: psycopg.Cursor) -> tuple[list[dict], int]:
    return (cursor.fetchall() if cursor.description else []), cursor.rowcount


def _reason(error: Exception) -> str:
    """The error's first line: libpq's hints follow on lines of their own."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
