"""The SQLite backend of the store: tokens, balances and run records (SPEC §8).

Shared by every gunicorn worker through one database file, each process through
a connection of its own (``sqlite_connection``).
Balances only ever change inside ``BEGIN IMMEDIATE`` transactions with
conditional updates, so concurrent runs can never drive one below zero.
Only hashes of tokens are stored.

A run is named by its token and its ``runId`` together (a ``runId`` is unique
per token). Its row keeps the attempts it has started, so a run whose worker
dies is charged for them and releases only the rest of its reservation, and
its final state as the JSON text answered, served again without parsing.
"""
from __future__ import annotations

import os
import secrets
import sqlite3
import time

from ..state import aborted_text, running_text
from .contract import (
    Balance,
    DuplicateRun,
    InsufficientBalance,
    RunSummary,
    Token,
    TokenDisabled,
    TooManyRuns,
    token_hash,
)
from .sqlite_connection import Connection
from .sqlite_schema import upgrade

# A run's final commit of a text this large skips SQLite's automatic checkpoint (see
# finish_run): copying that much of the WAL would delay an answer due at its deadline.
LARGE_TEXT = 1024 * 1024
MAX_HELD = 1024  # runs a process notes as started by it and not yet finished


class SQLiteStore:
    """The store in one SQLite file, for the workers of one host."""

    # Measured through gunicorn: a 31.8 MiB answer is at the client 135 ms after its run
    # stopped, its commit 60–80 ms of them; any JSON text alike (nothing is compressed).
    books_s_per_char = 4e-3 / (1024 * 1024)

    def __init__(self, path: str, busy_ms: int = 5000, synchronous: str = "NORMAL"):
        self._db = Connection(path, busy_ms, synchronous)
        # The runs this process started and has not finished: (token id, runId) → their
        # row and what they hold reserved, so finishing one need not read its row (_finish).
        self._held: dict[tuple[int, str], list[int]] = {}

    @property
    def path(self) -> str:
        """The database file; changing it takes effect when the connection is next opened."""
        return self._db.path

    @path.setter
    def path(self, path: str) -> None:
        self._db.path = path

    def migrate(self) -> None:
        """Create or upgrade the schema."""
        with self._db.transaction() as db:
            upgrade(db)

    # -- tokens ------------------------------------------------------------------

    def token(self, secret: str) -> Token | None:
        """The token with this secret; looked up by hash, so nothing compares secrets."""
        with self._db.reading() as db:
            row = db.execute("SELECT * FROM tokens WHERE hash = ?",
                             (token_hash(secret),)).fetchone()
        return _token(row) if row else None

    def token_by_name(self, name: str) -> Token | None:
        with self._db.reading() as db:
            row = db.execute("SELECT * FROM tokens WHERE name = ?", (name,)).fetchone()
        return _token(row) if row else None

    def tokens(self) -> list[Token]:
        with self._db.reading() as db:
            rows = db.execute("SELECT * FROM tokens ORDER BY name").fetchall()
        return [_token(row) for row in rows]

    def create_token(self, name: str, balance: int, secret: str | None = None) -> str:
        """Store a new token; returns its secret (shown once, never stored)."""
        secret = secret or "wr_" + secrets.token_urlsafe(32)
        with self._db.transaction() as db:
            db.execute("INSERT INTO tokens (name, hash, balance, created_at) VALUES (?, ?, ?, ?)",
                       (name, token_hash(secret), balance, time.time()))
        return secret

    def ensure_token(self, name: str, secret: str, min_balance: int) -> Token:
        """Create the token if absent, enable it and top it up to ``min_balance``."""
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
            db.execute("UPDATE tokens SET balance = balance + ? WHERE name = ?", (amount, name))
            row = db.execute("SELECT * FROM tokens WHERE name = ?", (name,)).fetchone()
        return _token(row) if row else None

    def set_enabled(self, name: str, enabled: bool) -> bool:
        with self._db.transaction() as db:
            changed = db.execute("UPDATE tokens SET enabled = ? WHERE name = ?",
                                 (int(enabled), name)).rowcount
        return bool(changed)

    # -- runs --------------------------------------------------------------------

    def start_run(self, run_id: str, token_id: int, request_id: str | None, reserve: int,
                  expires_in: float, max_concurrent: int = 0, graph: str = "null") -> None:
        """Record a run and reserve its worst-case cost, or raise and change nothing.

        ``run_id`` is unique per token. ``expires_in``: seconds after which a run still
        marked running is certainly dead (its worker would have been killed by then).
        ``max_concurrent`` 0 = no limit. ``graph``: the run's graph (``run_graph``).
        """
        self._db.checkpoint_if_due()
        # Each refusal raises inside the transaction, which rolls back what came before.
        now = time.time()
        expires_at = now + expires_in
        with self._db.transaction() as db:
            try:
                row_id = db.execute(
                    "INSERT INTO runs (id, token_id, request_id, status, reserved, "
                    "created_at, worker_pid, expires_at, body, graph) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                    (run_id, token_id, request_id, reserve, now, os.getpid(), expires_at,
                     running_text(run_id), graph)).lastrowid
            except sqlite3.IntegrityError:
                raise DuplicateRun(run_id) from None
            # One statement reserves and, with a limit, counts the token's runs and streams
            # in flight (each holds a worker; this run is one of them): a statement costs
            # more than its count. Only a refusal reads why (the order of SPEC §8).
            if not (db.execute(_RESERVE_WITHIN, (reserve, token_id, now, max_concurrent))
                    if max_concurrent else
                    db.execute(_RESERVE, (reserve, token_id))).rowcount:
                token = db.execute(_REFUSED, (reserve, token_id, now)).fetchone()
                if token is not None and not token["enabled"]:
                    raise TokenDisabled
                if token is None or token["balance"] < reserve:
                    raise InsufficientBalance(token["balance"] if token else 0, reserve)
                raise TooManyRuns(token["running"] - 1)
        self._hold(token_id, run_id, row_id, reserve)  # committed

    def reserve_more(self, run_id: str, token_id: int, amount: int) -> bool:
        """Reserve ``amount`` more CU for a running run (a loop starting, SPEC §11); False,
        and nothing changed, when the balance cannot cover it (or the run has ended)."""
        try:
            with self._db.transaction() as db:
                if not db.execute("UPDATE tokens SET balance = balance - ? "
                                  "WHERE id = ? AND balance >= ?",
                                  (amount, token_id, amount)).rowcount:
                    raise _Refused
                if not db.execute("UPDATE runs SET reserved = reserved + ? "
                                  "WHERE token_id = ? AND id = ? AND status = 'running'",
                                  (amount, token_id, run_id)).rowcount:
                    raise _Refused  # aborted meanwhile: the balance is rolled back too
        except _Refused:
            return False
        held = self._held.get((token_id, run_id))
        if held is not None:
            held[1] += amount
        return True

    def record_attempts(self, run_id: str, token_id: int, attempts: int) -> None:
        """Note the attempts the run has started so far: what it costs if its worker dies."""
        with self._db.transaction() as db:
            db.execute("UPDATE runs SET attempts = MAX(attempts, ?) "
                       "WHERE token_id = ? AND id = ? AND status = 'running'",
                       (attempts, token_id, run_id))

    def finish_run(self, run_id: str, token_id: int, status: str, total_cu: int,
                   text: str) -> None:
        """Store the final state, charge ``total_cu`` and release the rest, atomically.

        ``text``: the whole answer as JSON, stored as it is.
        """
        self._finish(run_id, token_id, status, total_cu, text)
        if len(text) > LARGE_TEXT:  # copied into the database when this process's next
            self._db.checkpoint_later()  # run starts, not while this answer is sent

    def _finish(self, run_id: str, token_id: int, status: str, total_cu: int,
                text: str) -> None:
        held = self._held.pop((token_id, run_id), None)
        with self._db.transaction() as db:
            if held is None:  # started by another process or store (or a retry)
                held = db.execute("SELECT row_id, reserved FROM runs WHERE token_id = ? "
                                  "AND id = ? AND status = 'running'",
                                  (token_id, run_id)).fetchone()
                if held is None:
                    return  # aborted meanwhile (taken for dead): its reservation is released
            row_id, reserved = held
            # A running run's reservation changes only in the process running it (start_run,
            # reserve_more), so the note is the row's unless another process aborted the run
            # meanwhile: then it is not running. (Its ids are checked with its row_id: a run
            # aborted and pruned meanwhile could have left its row_id to another run.)
            if db.execute("UPDATE runs SET status = ?, total_cu = ?, reserved = 0, "
                          "finished_at = ?, body = ?, progress = progress + 1 WHERE row_id = ? "
                          "AND token_id = ? AND id = ? AND status = 'running'",
                          (status, total_cu, time.time(), text, row_id, token_id,
                           run_id)).rowcount:
                db.execute("UPDATE tokens SET balance = balance + ?, used = used + ? "
                           "WHERE id = ?", (reserved - total_cu, total_cu, token_id))

    def _hold(self, token_id: int, run_id: str, row_id: int, reserved: int) -> None:
        """Note a run this process started. Notes of runs never finished here (a bug in
        the engine, the store away meanwhile) are dropped when they reach ``MAX_HELD``:
        finishing a run without its note reads its row."""
        if len(self._held) >= MAX_HELD:
            self._held.clear()
        self._held[token_id, run_id] = [row_id, reserved]

    def run_text(self, run_id: str, token_id: int) -> str | None:
        """A stored run as the JSON text stored (never parsed), only for the token that made it.

        A run shown as running whose worker is gone is aborted first.
        """
        with self._db.reading() as db:
            row = db.execute("SELECT row_id, status, worker_pid, expires_at, body FROM runs "
                             "WHERE token_id = ? AND id = ?", (token_id, run_id)).fetchone()
        if row is None:
            return None
        if row["status"] == "running" and _dead(row):
            self._abort_row(row["row_id"])
            return self.run_text(run_id, token_id)  # aborted now, or finished meanwhile
        return row["body"]

    def run_graph(self, run_id: str, token_id: int) -> str | None:
        """The run's graph as stored when it started, only for the token that made it."""
        with self._db.reading() as db:
            row = db.execute("SELECT graph FROM runs WHERE token_id = ? AND id = ?",
                             (token_id, run_id)).fetchone()
        return None if row is None else row["graph"]

    # -- run control (SPEC §12) ---------------------------------------------------

    def save_progress(self, run_id: str, token_id: int, attempts: int,
                      text: str | None = None) -> bool:
        """Note the started attempts and store the partial state (when given); True when
        a cancel has been asked for."""
        if text is None:
            with self._db.reading() as db:
                row = db.execute("SELECT cancel_requested FROM runs WHERE token_id = ? "
                                 "AND id = ? AND status = 'running'",
                                 (token_id, run_id)).fetchone()
            return bool(row and row[0])
        with self._db.transaction() as db:
            row = db.execute("UPDATE runs SET body = ?, attempts = MAX(attempts, ?), "
                             "progress = progress + 1 WHERE token_id = ? AND id = ? "
                             "AND status = 'running' RETURNING cancel_requested",
                             (text, attempts, token_id, run_id)).fetchone()
        return bool(row and row[0])

    def request_cancel(self, run_id: str, token_id: int) -> str | None:
        with self._db.transaction() as db:
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE token_id = ? AND id = ? "
                       "AND status = 'running'", (token_id, run_id))
            row = db.execute("SELECT status FROM runs WHERE token_id = ? AND id = ?",
                             (token_id, run_id)).fetchone()
        return row["status"] if row else None

    def follow(self, run_id: str, token_id: int, seen: int) -> tuple[int, str | None] | None:
        with self._db.reading() as db:
            row = db.execute("SELECT row_id, status, worker_pid, expires_at, progress, "
                             "CASE WHEN progress > ? THEN body END AS body FROM runs "
                             "WHERE token_id = ? AND id = ?",
                             (seen, token_id, run_id)).fetchone()
        if row is None:
            return None
        if row["status"] == "running" and _dead(row):
            self._abort_row(row["row_id"])
            return self.follow(run_id, token_id, seen)
        return row["progress"], row["body"]

    def list_runs(self, token_id: int, status: str | None, limit: int,
                  before: int | None = None) -> list[RunSummary]:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT row_id, id, status, created_at, finished_at, total_cu FROM runs "
                "WHERE token_id = ? AND row_id < ? AND (? IS NULL OR status = ?) "
                "ORDER BY row_id DESC LIMIT ?",
                (token_id, before or 2 ** 63 - 1, status, status, limit)).fetchall()
        return [RunSummary(row["row_id"], row["id"], row["status"], row["created_at"],
                           None if row["finished_at"] is None else
                           max(0, round((row["finished_at"] - row["created_at"]) * 1000)),
                           row["total_cu"]) for row in rows]

    def balance(self, token_id: int) -> Balance:
        with self._db.reading() as db:
            row = db.execute("SELECT balance, used, (SELECT COALESCE(SUM(reserved), 0) "
                             "FROM runs WHERE token_id = tokens.id AND status = 'running') "
                             "AS reserved FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return Balance(row["balance"], row["reserved"], row["used"])

    def start_following(self, token_id: int, limit: int, expires_in: float,
                        max_concurrent: int = 0) -> int | None:
        now = time.time()
        with self._db.transaction() as db:
            rows = db.execute("SELECT id, worker_pid, expires_at FROM followers "
                              "WHERE token_id = ?", (token_id,)).fetchall()
            gone = [row["id"] for row in rows if _dead(row)]
            db.executemany("DELETE FROM followers WHERE id = ?", ((id_,) for id_ in gone))
            following = len(rows) - len(gone)
            if following >= limit:
                return None
            if max_concurrent and following + db.execute(
                    "SELECT COUNT(*) FROM runs WHERE status = 'running' AND token_id = ? "
                    "AND expires_at > ?", (token_id, now)).fetchone()[0] >= max_concurrent:
                return None
            return db.execute("INSERT INTO followers (token_id, worker_pid, expires_at) "
                              "VALUES (?, ?, ?) RETURNING id",
                              (token_id, os.getpid(), now + expires_in)).fetchone()[0]

    def stop_following(self, follower: int) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM followers WHERE id = ?", (follower,))

    # -- runs whose worker died --------------------------------------------------

    def abort_run(self, run_id: str, token_id: int, attempts: int | None = None,
                  mine: bool = False) -> bool:
        """Mark a running run ``failure``/``ABORTED``: charge its started attempts (the
        stored count or ``attempts``, whichever is larger, at most the reservation) and
        release the rest. False when it is not running (finished meanwhile). ``mine``:
        only if this process started it."""
        with self._db.reading() as db:
            row = db.execute("SELECT row_id FROM runs WHERE token_id = ? AND id = ? "
                             "AND status = 'running' AND (? OR worker_pid = ?)",
                             (token_id, run_id, not mine, os.getpid())).fetchone()
        return bool(row) and self._abort_row(row["row_id"], attempts)

    def abort_orphans(self) -> int:
        """Abort running runs whose worker is gone or whose time is certainly up."""
        with self._db.reading() as db:
            rows = db.execute("SELECT row_id, worker_pid, expires_at FROM runs "
                              "WHERE status = 'running'").fetchall()
        return sum(self._abort_row(row["row_id"]) for row in rows if _dead(row))

    def abort_runs_of_worker(self, pid: int) -> int:
        """Abort the running runs of a worker that has exited (gunicorn's child_exit)."""
        with self._db.reading() as db:
            rows = db.execute("SELECT row_id FROM runs WHERE status = 'running' "
                              "AND worker_pid = ?", (pid,)).fetchall()
        with self._db.transaction() as db:
            db.execute("DELETE FROM followers WHERE worker_pid = ?", (pid,))
        return sum(self._abort_row(row["row_id"]) for row in rows)

    def _abort_row(self, row_id: int, attempts: int | None = None) -> bool:
        """Abort one run if it is still running; its charge is its started attempts."""
        with self._db.transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE row_id = ? AND status = 'running'",
                             (row_id,)).fetchone()
            if row is None:
                return False  # finished meanwhile
            self._held.pop((row["token_id"], row["id"]), None)
            now = time.time()
            charged = min(row["reserved"], max(row["attempts"], attempts or 0))
            text = aborted_text(row["id"], round((now - row["created_at"]) * 1000), charged)
            db.execute("UPDATE tokens SET balance = balance + ?, used = used + ? WHERE id = ?",
                       (row["reserved"] - charged, charged, row["token_id"]))
            db.execute("UPDATE runs SET status = 'failure', total_cu = ?, reserved = 0, "
                       "finished_at = ?, body = ?, progress = progress + 1 WHERE row_id = ?",
                       (charged, now, text, row_id))
        return True

    def prune(self, retention_seconds: float) -> int:
        """Delete finished runs older than the retention."""
        with self._db.transaction() as db:
            return db.execute("DELETE FROM runs WHERE status != 'running' AND created_at < ?",
                              (time.time() - retention_seconds,)).rowcount

    def check_writable(self) -> None:
        """Raise unless the database can be written right now (readiness)."""
        with self._db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO probes (id, checked_at) VALUES (1, ?)",
                       (time.time(),))

    def backup(self, target: str) -> None:
        """A consistent copy of the live database (SQLite's online backup)."""
        self._db.backup(target)

    def close(self) -> None:
        self._db.close()


# A run's reservation (start_run): its cost taken from the token's balance, unless the
# token is disabled or short; with a limit, also unless the token's runs and streams in
# flight (this run included) would exceed it; why it was refused, read after.
_RESERVE = "UPDATE tokens SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1 AND enabled"
_IN_FLIGHT = ("(SELECT COUNT(*) FROM runs WHERE status = 'running' AND token_id = ?2 "
              "AND expires_at > ?3) + (SELECT COUNT(*) FROM followers WHERE token_id = ?2 "
              "AND expires_at > ?3)")
_RESERVE_WITHIN = f"{_RESERVE} AND {_IN_FLIGHT} <= ?4"
_REFUSED = f"SELECT balance, enabled, {_IN_FLIGHT} AS running FROM tokens WHERE id = ?2"


class _Refused(Exception):
    """Rolls a transaction back: what it was asked for cannot be done."""


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


def _token(row: sqlite3.Row) -> Token:
    return Token(id=row["id"], name=row["name"], balance=row["balance"],
                 enabled=bool(row["enabled"]))
