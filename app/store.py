"""Tokens, compute-unit balances and run records, in SQLite (SPEC §8).

Shared by every gunicorn worker through one database file in WAL mode; each
process opens its own connection on first use (SQLite is not fork-safe: a forked
child forgets its parent's).
Balances only ever change inside ``BEGIN IMMEDIATE`` transactions with
conditional updates, so concurrent runs can never drive one below zero.
Only hashes of tokens are stored.

A run is named by its token and its ``runId`` together (a ``runId`` is unique
per token). Its row keeps the attempts it has started, so a run whose worker
dies is charged for them and releases only the rest of its reservation, and
its final state as the JSON text answered, served again without parsing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass


def _complete_first_schema(db: sqlite3.Connection) -> None:
    """Add what a store made by migration 1's first version lacks; nothing for others."""
    columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
    for name, kind in (("worker_pid", "INTEGER"), ("expires_at", "REAL")):
        if name not in columns:
            db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
    # Runs such a store shows as running were started by a version that is gone: their
    # time is up (the start-up clean-up aborts them and releases their reservations).
    db.execute("UPDATE runs SET expires_at = 0 WHERE expires_at IS NULL AND status = 'running'")
    db.execute("CREATE INDEX IF NOT EXISTS runs_running ON runs (status, token_id) "
               "WHERE status = 'running'")
    db.execute("CREATE TABLE IF NOT EXISTS probes "
               "(id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL)")


SCHEMA = [  # SQL or a function of the connection; user_version = how many have run
    """
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        balance INTEGER NOT NULL CHECK (balance >= 0),
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        token_id INTEGER NOT NULL REFERENCES tokens(id),
        request_id TEXT,
        status TEXT NOT NULL,
        reserved INTEGER NOT NULL,
        total_cu INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        finished_at REAL,
        worker_pid INTEGER,
        expires_at REAL,
        body TEXT NOT NULL
    );
    CREATE INDEX runs_created_at ON runs (created_at);
    CREATE INDEX runs_running ON runs (status, token_id) WHERE status = 'running';
    CREATE TABLE probes (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL);
    """,
    # 2: migration 1 gained worker_pid, expires_at, runs_running and probes after
    # its first version had made stores: complete those.
    _complete_first_schema,
    # 3: a runId is unique per token, not across tokens (SPEC §8), so rows get an id of
    # their own; `attempts` (started so far) is what a run whose worker dies is charged.
    """
    CREATE TABLE runs_3 (
        row_id INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        token_id INTEGER NOT NULL REFERENCES tokens(id),
        request_id TEXT,
        status TEXT NOT NULL,
        reserved INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        total_cu INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        finished_at REAL,
        worker_pid INTEGER,
        expires_at REAL,
        body TEXT NOT NULL,
        UNIQUE (token_id, id)
    );
    INSERT INTO runs_3 (id, token_id, request_id, status, reserved, total_cu, created_at,
                        finished_at, worker_pid, expires_at, body)
        SELECT id, token_id, request_id, status, reserved, total_cu, created_at,
               finished_at, worker_pid, expires_at, body
        FROM runs ORDER BY created_at;
    DROP TABLE runs;
    ALTER TABLE runs_3 RENAME TO runs;
    CREATE INDEX runs_created_at ON runs (created_at);
    CREATE INDEX runs_running ON runs (status, token_id) WHERE status = 'running'
    """,
]


# A run's final commit of a text this large skips SQLite's automatic checkpoint (see
# finish_run): copying that much of the WAL would delay an answer due at its deadline.
LARGE_TEXT = 1024 * 1024


class StoreUnavailable(Exception):
    """The database cannot be used right now (locked, read-only, full, missing)."""


class DuplicateRun(Exception):
    """A run with this id exists already."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


class TooManyRuns(Exception):
    """The token has as many runs in flight as it may."""


class InsufficientBalance(Exception):
    def __init__(self, balance: int, required: int):
        super().__init__(f"balance {balance} < required {required}")
        self.balance, self.required = balance, required


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    balance: int
    enabled: bool


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_stores: weakref.WeakSet[Store] = weakref.WeakSet()  # this process's, for the fork hook


def _reset_after_fork() -> None:
    for store in list(_stores):
        store._forget_connection()


os.register_at_fork(after_in_child=_reset_after_fork)


class Store:
    def __init__(self, path: str, busy_ms: int = 5000):
        self.path, self.busy_seconds = path, busy_ms / 1000
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._checkpoint_due = False  # a large text went into the WAL unchecked (finish_run)
        _stores.add(self)

    def _forget_connection(self) -> None:
        """In a forked child: the connection is the parent's; open one of its own."""
        self._conn, self._lock = None, threading.RLock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                if os.path.dirname(self.path):
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.busy_seconds,
                                       isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except (OSError, sqlite3.Error) as error:
                raise StoreUnavailable(str(error)) from error
            self._conn = conn
        return self._conn

    def _transaction(self):
        return _Transaction(self)

    @contextlib.contextmanager
    def _reading(self):
        """The connection for a read, under the process lock; errors as StoreUnavailable."""
        with self._lock:
            try:
                yield self._db()
            except sqlite3.Error as error:
                raise StoreUnavailable(str(error)) from error

    def migrate(self) -> None:
        """Create or upgrade the schema."""
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, step in enumerate(SCHEMA[version:], start=version + 1):
                if callable(step):
                    step(db)
                else:
                    for statement in filter(str.strip, step.split(";")):
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # -- tokens ------------------------------------------------------------------

    def token(self, secret: str) -> Token | None:
        """The token with this secret; looked up by hash, so nothing compares secrets."""
        with self._reading() as db:
            row = db.execute("SELECT * FROM tokens WHERE hash = ?",
                                     (token_hash(secret),)).fetchone()
        return _token(row) if row else None

    def token_by_name(self, name: str) -> Token | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM tokens WHERE name = ?", (name,)).fetchone()
        return _token(row) if row else None

    def tokens(self) -> list[Token]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM tokens ORDER BY name").fetchall()
        return [_token(row) for row in rows]

    def create_token(self, name: str, balance: int, secret: str | None = None) -> str:
        """Store a new token; returns its secret (shown once, never stored)."""
        secret = secret or "wr_" + secrets.token_urlsafe(32)
        with self._transaction() as db:
            db.execute("INSERT INTO tokens (name, hash, balance, created_at) VALUES (?, ?, ?, ?)",
                       (name, token_hash(secret), balance, time.time()))
        return secret

    def ensure_token(self, name: str, secret: str, min_balance: int) -> Token:
        """Create the token if absent, enable it and top it up to ``min_balance``."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute("INSERT INTO tokens (name, hash, balance, created_at) "
                           "VALUES (?, ?, ?, ?)", (name, token_hash(secret), min_balance,
                                                   time.time()))
            else:
                db.execute("UPDATE tokens SET hash = ?, enabled = 1, balance = MAX(balance, ?) "
                           "WHERE name = ?", (token_hash(secret), min_balance, name))
        return self.token(secret)

    def top_up(self, name: str, amount: int) -> Token | None:
        with self._transaction() as db:
            db.execute("UPDATE tokens SET balance = balance + ? WHERE name = ?", (amount, name))
            row = db.execute("SELECT * FROM tokens WHERE name = ?", (name,)).fetchone()
        return _token(row) if row else None

    def set_enabled(self, name: str, enabled: bool) -> bool:
        with self._transaction() as db:
            changed = db.execute("UPDATE tokens SET enabled = ? WHERE name = ?",
                                 (int(enabled), name)).rowcount
        return bool(changed)

    # -- runs --------------------------------------------------------------------

    def start_run(self, run_id: str, token_id: int, request_id: str | None, reserve: int,
                  expires_at: float, max_concurrent: int = 0) -> None:
        """Record a run and reserve its worst-case cost, or raise and change nothing.

        ``run_id`` is unique per token. ``expires_at``: when a run still marked
        running is certainly dead (its worker would have been killed by then).
        ``max_concurrent`` 0 = no limit.
        """
        self._checkpoint_if_due()
        # Each refusal raises inside the transaction, which rolls back what came before.
        now = time.time()
        with self._transaction() as db:
            try:
                db.execute("INSERT INTO runs (id, token_id, request_id, status, reserved, "
                           "created_at, worker_pid, expires_at, body) "
                           "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                           (run_id, token_id, request_id, reserve, now, os.getpid(),
                            expires_at, json.dumps({"runId": run_id, "status": "running"})))
            except sqlite3.IntegrityError:
                raise DuplicateRun(run_id) from None
            if not db.execute("UPDATE tokens SET balance = balance - ? "
                              "WHERE id = ? AND balance >= ?",
                              (reserve, token_id, reserve)).rowcount:
                balance = db.execute("SELECT balance FROM tokens WHERE id = ?",
                                     (token_id,)).fetchone()[0]
                raise InsufficientBalance(balance, reserve)
            if max_concurrent:
                running = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running' "
                                     "AND token_id = ? AND expires_at > ?",
                                     (token_id, now)).fetchone()[0]
                if running > max_concurrent:  # this run is one of them
                    raise TooManyRuns(running - 1)

    def record_attempts(self, run_id: str, token_id: int, attempts: int) -> None:
        """Note the attempts the run has started so far: what it costs if its worker dies."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET attempts = MAX(attempts, ?) "
                       "WHERE token_id = ? AND id = ? AND status = 'running'",
                       (attempts, token_id, run_id))

    def finish_run(self, run_id: str, token_id: int, body: dict,
                   text: str | None = None) -> None:
        """Store the final state, charge ``totalCu`` and release the rest, atomically.

        ``text``: the whole answer as JSON, stored as it is (``body`` then needs only
        ``status`` and ``totalCu``); else ``body`` is written.
        """
        text = text or json.dumps(body)
        # SQLite checkpoints inside a commit that leaves the WAL past 1000 pages: after
        # a 32 MiB answer that copy took 150 ms, and this commit comes after the run's
        # deadline. Skip it here; this process checkpoints before its next run starts.
        large = len(text) > LARGE_TEXT
        with self._lock:
            if large:
                self._autocheckpoint(0)
            try:
                self._finish(run_id, token_id, body, text)
            finally:
                if large:
                    self._autocheckpoint(1000)  # SQLite's default
                    self._checkpoint_due = True

    def _finish(self, run_id: str, token_id: int, body: dict, text: str) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT row_id, reserved, status FROM runs "
                             "WHERE token_id = ? AND id = ?", (token_id, run_id)).fetchone()
            if row is None or row["status"] != "running":
                return  # aborted meanwhile (taken for dead): its reservation is released
            db.execute("UPDATE tokens SET balance = balance + ? WHERE id = ?",
                       (row["reserved"] - body["totalCu"], token_id))
            db.execute("UPDATE runs SET status = ?, total_cu = ?, reserved = 0, "
                       "finished_at = ?, body = ? WHERE row_id = ?",
                       (body["status"], body["totalCu"], time.time(), text, row["row_id"]))

    def _autocheckpoint(self, pages: int) -> None:
        with self._reading() as db:
            db.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def _checkpoint_if_due(self) -> None:
        """The checkpoint a large answer's commit skipped, before this process's next run."""
        if self._checkpoint_due:
            self._checkpoint_due = False
            with self._reading() as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def run_text(self, run_id: str, token_id: int) -> str | None:
        """A stored run as the JSON text stored (never parsed), only for the token that made it.

        A run shown as running whose worker is gone is aborted first.
        """
        with self._reading() as db:
            row = db.execute("SELECT row_id, status, worker_pid, expires_at, body FROM runs "
                             "WHERE token_id = ? AND id = ?", (token_id, run_id)).fetchone()
        if row is None:
            return None
        if row["status"] == "running" and _dead(row):
            self._abort_row(row["row_id"])
            return self.run_text(run_id, token_id)  # aborted now, or finished meanwhile
        return row["body"]

    # -- runs whose worker died --------------------------------------------------

    def abort_run(self, run_id: str, token_id: int, attempts: int | None = None) -> bool:
        """Mark a running run ``failure``/``ABORTED``: charge its started attempts (the
        stored count or ``attempts``, whichever is larger, at most the reservation) and
        release the rest. False when it is not running (finished meanwhile)."""
        with self._reading() as db:
            row = db.execute("SELECT row_id FROM runs WHERE token_id = ? AND id = ? "
                             "AND status = 'running'", (token_id, run_id)).fetchone()
        return bool(row) and self._abort_row(row["row_id"], attempts)

    def abort_orphans(self) -> int:
        """Abort running runs whose worker is gone or whose time is certainly up."""
        with self._reading() as db:
            rows = db.execute("SELECT row_id, worker_pid, expires_at FROM runs "
                              "WHERE status = 'running'").fetchall()
        return sum(self._abort_row(row["row_id"]) for row in rows if _dead(row))

    def abort_runs_of_worker(self, pid: int) -> int:
        """Abort the running runs of a worker that has exited (gunicorn's child_exit)."""
        with self._reading() as db:
            rows = db.execute("SELECT row_id FROM runs WHERE status = 'running' "
                              "AND worker_pid = ?", (pid,)).fetchall()
        return sum(self._abort_row(row["row_id"]) for row in rows)

    def _abort_row(self, row_id: int, attempts: int | None = None) -> bool:
        """Abort one run if it is still running; its charge is its started attempts."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE row_id = ? AND status = 'running'",
                             (row_id,)).fetchone()
            if row is None:
                return False  # finished meanwhile
            now = time.time()
            charged = min(row["reserved"], max(row["attempts"], attempts or 0))
            body = {"runId": row["id"], "status": "failure",
                    "durationMs": round((now - row["created_at"]) * 1000), "totalCu": charged,
                    "error": {"code": "ABORTED", "message": "The worker running this run "
                              "stopped before the run finished."},
                    "executionState": {}}
            db.execute("UPDATE tokens SET balance = balance + ? WHERE id = ?",
                       (row["reserved"] - charged, row["token_id"]))
            db.execute("UPDATE runs SET status = 'failure', total_cu = ?, reserved = 0, "
                       "finished_at = ?, body = ? WHERE row_id = ?",
                       (charged, now, json.dumps(body), row_id))
        return True

    def prune(self, retention_seconds: float) -> int:
        """Delete finished runs older than the retention."""
        with self._transaction() as db:
            return db.execute("DELETE FROM runs WHERE status != 'running' AND created_at < ?",
                              (time.time() - retention_seconds,)).rowcount

    def check_writable(self) -> None:
        """Raise unless the database can be written right now (readiness)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO probes (id, checked_at) VALUES (1, ?)",
                       (time.time(),))

    def backup(self, target: str) -> None:
        """A consistent copy of the live database (SQLite's online backup)."""
        with self._lock, sqlite3.connect(target) as copy:
            self._db().backup(copy)
        copy.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _dead(row: sqlite3.Row) -> bool:
    """A running run whose time is certainly up or whose worker is gone."""
    return row["expires_at"] < time.time() or not _alive(row["worker_pid"])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``), holding the process lock.

    SQLite's operational errors (locked past the busy timeout, read-only, disk
    full, file gone) leave as ``StoreUnavailable``, after a rollback.
    """

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.db = self.store._db()
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            self.store._lock.release()
            raise StoreUnavailable(str(error)) from error
        except BaseException:
            self.store._lock.release()
            raise
        return self.db

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
            self.store._lock.release()
        if kind is not None and issubclass(kind, sqlite3.Error):
            raise StoreUnavailable(str(error)) from error


def _token(row: sqlite3.Row) -> Token:
    return Token(id=row["id"], name=row["name"], balance=row["balance"],
                 enabled=bool(row["enabled"]))
