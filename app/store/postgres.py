"""The PostgreSQL backend of the store: tokens, balances and run records for any number
of hosts (SPEC §8, §13).

The same contract as the SQLite backend, shared by every worker of every host. Each
process talks to the database through a pool of its own (``postgres_connection``).

- A token's row serialises its reservations across hosts: ``start_run`` locks it
  (``SELECT … FOR UPDATE``) before it checks that the run is new, that the balance
  covers it and counts the token's runs in flight, then inserts it, so the count and
  the balance are exact and a refusal changes nothing.
- A run's hot path is three round trips: the token's lookup, its start and its
  finish, each one statement in autocommit (the start and the finish are functions
  in the database, ``postgres_schema``'s migration 4).
- Locks are taken run first, then token, by every operation on an existing run
  (``start_run`` locks only its token), so two of them never wait for each other.
- Time is the database's: a run expires ``expires_in`` seconds after ``now()``.
- A run records the host and pid of its worker. A run of *this* host whose worker is
  gone is dead at once; one of another host is judged by its expiry only (its pid
  means nothing here).
- Sweeps (``abort_orphans``, ``abort_runs_of_worker``, ``prune``) take rows with
  ``FOR UPDATE SKIP LOCKED``, one run per transaction: several hosts may sweep at
  once, each run is aborted once.
"""
from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from ..state import aborted_text, running_text
from .contract import (
    Balance,
    DuplicateRun,
    InsufficientBalance,
    NotSupported,
    RunSummary,
    Token,
    TokenDisabled,
    TooManyRuns,
    token_hash,
)
from .postgres_connection import Pool
from .postgres_schema import upgrade

_TOKEN = "SELECT id, name, balance, enabled FROM tokens"
# What aborting a run needs, its age by the database's clock included.
_ABORTING = ("SELECT row_id, id, token_id, reserved, attempts, "
             "extract(epoch FROM now() - created_at)::float8 AS age FROM runs ")
_LIVENESS = "SELECT row_id, worker_host, worker_pid, expires_at < now() AS expired FROM runs "


class PostgresStore:
    """The store in a PostgreSQL database. ``host``: this host's identity in the runs it
    starts (default: its host name, which containers keep distinct too)."""

    # Measured in process: a 30 MiB answer of JSON numbers took 390–440 ms to store
    # (lz4, migration 5; TOAST writes it in 2 KB rows), a repetitive one 150–300 ms.
    books_s_per_char = 16e-3 / (1024 * 1024)

    def __init__(self, url: str, busy_ms: int = 5000, host: str | None = None):
        self._db = Pool(url, busy_ms)
        self.host = host or socket.gethostname()

    def migrate(self) -> None:
        """Apply the migrations the database lacks (once, whichever host comes first)."""
        with self._db.transaction() as db:
            upgrade(db)

    # -- tokens ------------------------------------------------------------------

    def token(self, secret: str) -> Token | None:
        """The token with this secret; looked up by hash, so nothing compares secrets."""
        return self._one_token(_TOKEN + " WHERE hash = %s", (token_hash(secret),))

    def token_by_name(self, name: str) -> Token | None:
        return self._one_token(_TOKEN + " WHERE name = %s", (name,))

    def tokens(self) -> list[Token]:
        with self._db.transaction() as db:
            return [Token(**row) for row in db.execute(_TOKEN + " ORDER BY name")]

    def create_token(self, name: str, balance: int, secret: str | None = None) -> str:
        """Store a new token; returns its secret (shown once, never stored)."""
        secret = secret or "wr_" + secrets.token_urlsafe(32)
        with self._db.transaction() as db:
            db.execute("INSERT INTO tokens (name, hash, balance) VALUES (%s, %s, %s)",
                       (name, token_hash(secret), balance))
        return secret

    def ensure_token(self, name: str, secret: str, min_balance: int) -> Token:
        """Create the token if absent, enable it and top it up to ``min_balance``."""
        return self._one_token(
            "INSERT INTO tokens (name, hash, balance) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, enabled = true, "
            "balance = greatest(tokens.balance, excluded.balance) "
            "RETURNING id, name, balance, enabled", (name, token_hash(secret), min_balance))

    def top_up(self, name: str, amount: int) -> Token | None:
        return self._one_token("UPDATE tokens SET balance = balance + %s WHERE name = %s "
                               "RETURNING id, name, balance, enabled", (amount, name))

    def set_enabled(self, name: str, enabled: bool) -> bool:
        with self._db.transaction() as db:
            return bool(db.execute("UPDATE tokens SET enabled = %s WHERE name = %s",
                                   (enabled, name)).rowcount)

    def _one_token(self, sql: str, params: tuple) -> Token | None:
        rows, _ = self._db.statement(sql, params)
        return Token(**rows[0]) if rows else None

    # -- runs --------------------------------------------------------------------

    def start_run(self, run_id: str, token_id: int, request_id: str | None, reserve: int,
                  expires_in: float, max_concurrent: int = 0, graph: str = "null") -> None:
        """Record a run and reserve its worst-case cost, or raise and change nothing.

        ``run_id`` is unique per token; ``expires_in``: seconds from the database's now
        after which a run still running is certainly dead; ``max_concurrent`` 0 = no limit;
        ``graph``: the run's graph (``run_graph``). One statement: the function
        ``runner_start_run`` (postgres_schema's migration 4).
        """
        (row,), _ = self._db.statement(
            "SELECT * FROM runner_start_run(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (run_id, token_id, request_id, reserve, float(expires_in), max_concurrent,
             self.host, os.getpid(), running_text(run_id), graph))
        if row["outcome"] == "duplicate":
            raise DuplicateRun(run_id)
        if row["outcome"] == "disabled":
            raise TokenDisabled
        if row["outcome"] == "insufficient":
            raise InsufficientBalance(row["balance"], reserve)
        if row["outcome"] == "too_many":
            raise TooManyRuns(row["running"])

    def reserve_more(self, run_id: str, token_id: int, amount: int) -> bool:
        """Reserve ``amount`` more CU for a running run (a loop starting, SPEC §11); False,
        and nothing changed, when the balance cannot cover it (or the run has ended)."""
        with self._db.transaction() as db:
            run = self._running(db, run_id, token_id)
            if run is None or not db.execute(
                    "UPDATE tokens SET balance = balance - %s WHERE id = %s AND balance >= %s",
                    (amount, token_id, amount)).rowcount:
                return False
            db.execute("UPDATE runs SET reserved = reserved + %s WHERE row_id = %s",
                       (amount, run["row_id"]))
        return True

    def record_attempts(self, run_id: str, token_id: int, attempts: int) -> None:
        """Note the attempts the run has started so far: what it costs if its worker dies."""
        self._db.statement("UPDATE runs SET attempts = greatest(attempts, %s) "
                           "WHERE token_id = %s AND id = %s AND status = 'running'",
                           (attempts, token_id, run_id))

    def finish_run(self, run_id: str, token_id: int, status: str, total_cu: int,
                   text: str) -> None:
        """Store the final state (``text``, the answer's JSON, as it is), charge
        ``total_cu`` and release the rest, atomically: one statement, the function
        ``runner_finish_run``. A run aborted meanwhile (taken for dead) is left as it is:
        its reservation is released."""
        self._db.statement("SELECT runner_finish_run(%s, %s, %s, %s, %s)",
                           (run_id, token_id, status, total_cu, text))

    def run_text(self, run_id: str, token_id: int) -> str | None:
        """A stored run as the JSON text stored (never parsed), only for the token that made
        it. A run shown as running whose worker is certainly gone is aborted first."""
        with self._db.transaction() as db:
            row = db.execute("SELECT row_id, status, worker_host, worker_pid, "
                             "expires_at < now() AS expired, body FROM runs "
                             "WHERE token_id = %s AND id = %s", (token_id, run_id)).fetchone()
        if row is None:
            return None
        if row["status"] == "running" and self._dead(row):
            self._abort_row(row["row_id"])
            with self._db.transaction() as db:  # aborted now, by another host, or finished
                row = db.execute("SELECT body FROM runs WHERE row_id = %s",
                                 (row["row_id"],)).fetchone()
        return row["body"] if row else None

    def run_graph(self, run_id: str, token_id: int) -> str | None:
        """The run's graph as stored when it started, only for the token that made it."""
        with self._db.transaction() as db:
            row = db.execute("SELECT graph FROM runs WHERE token_id = %s AND id = %s",
                             (token_id, run_id)).fetchone()
        return None if row is None else row["graph"]

    @staticmethod
    def _running(db: Any, run_id: str, token_id: int) -> dict | None:
        """The run's row, locked, if it is still running."""
        return db.execute("SELECT row_id, reserved FROM runs WHERE token_id = %s AND id = %s "
                          "AND status = 'running' FOR UPDATE", (token_id, run_id)).fetchone()

    # -- run control (SPEC §12) ---------------------------------------------------

    def save_progress(self, run_id: str, token_id: int, attempts: int,
                      text: str | None = None) -> bool:
        """Note the started attempts and store the partial state (when given); True when
        a cancel has been asked for."""
        with self._db.transaction() as db:
            if text is None:
                row = db.execute("SELECT cancel_requested FROM runs WHERE token_id = %s "
                                 "AND id = %s AND status = 'running'",
                                 (token_id, run_id)).fetchone()
            else:
                row = db.execute("UPDATE runs SET body = %s, attempts = greatest(attempts, "
                                 "%s), progress = progress + 1 WHERE token_id = %s AND id = %s "
                                 "AND status = 'running' RETURNING cancel_requested",
                                 (text, attempts, token_id, run_id)).fetchone()
        return bool(row and row["cancel_requested"])

    def request_cancel(self, run_id: str, token_id: int) -> str | None:
        with self._db.transaction() as db:
            row = db.execute("UPDATE runs SET cancel_requested = true WHERE token_id = %s "
                             "AND id = %s AND status = 'running' RETURNING status",
                             (token_id, run_id)).fetchone()
            if row is None:
                row = db.execute("SELECT status FROM runs WHERE token_id = %s AND id = %s",
                                 (token_id, run_id)).fetchone()
        return row["status"] if row else None

    def follow(self, run_id: str, token_id: int, seen: int) -> tuple[int, str | None] | None:
        with self._db.transaction() as db:
            row = db.execute("SELECT row_id, status, worker_host, worker_pid, "
                             "expires_at < now() AS expired, progress, "
                             "CASE WHEN progress > %s THEN body END AS body FROM runs "
                             "WHERE token_id = %s AND id = %s",
                             (seen, token_id, run_id)).fetchone()
        if row is None:
            return None
        if row["status"] == "running" and self._dead(row):
            self._abort_row(row["row_id"])
            return self.follow(run_id, token_id, seen)
        return row["progress"], row["body"]

    def list_runs(self, token_id: int, status: str | None, limit: int,
                  before: int | None = None) -> list[RunSummary]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT row_id, id, status, extract(epoch FROM created_at)::float8 AS created, "
                "(extract(epoch FROM finished_at - created_at) * 1000)::bigint AS duration, "
                "total_cu FROM runs WHERE token_id = %s AND row_id < %s "
                "AND (%s::text IS NULL OR status = %s) ORDER BY row_id DESC LIMIT %s",
                (token_id, before or 2 ** 63 - 1, status, status, limit)).fetchall()
        return [RunSummary(row["row_id"], row["id"], row["status"], row["created"],
                           row["duration"], row["total_cu"]) for row in rows]

    def balance(self, token_id: int) -> Balance:
        with self._db.transaction() as db:
            # (sum() of a bigint is numeric, which would come back as a Decimal)
            row = db.execute("SELECT balance, used, (SELECT coalesce(sum(reserved), 0)::bigint "
                             "FROM runs WHERE token_id = tokens.id AND status = 'running') "
                             "AS reserved FROM tokens WHERE id = %s", (token_id,)).fetchone()
        return Balance(row["balance"], row["reserved"], row["used"])

    def start_following(self, token_id: int, limit: int, expires_in: float,
                        max_concurrent: int = 0) -> int | None:
        with self._db.transaction() as db:
            # The token's row serialises its followers' count across hosts.
            db.execute("SELECT id FROM tokens WHERE id = %s FOR UPDATE", (token_id,))
            rows = db.execute("SELECT id, worker_host, worker_pid, expires_at < now() "
                              "AS expired FROM followers WHERE token_id = %s",
                              (token_id,)).fetchall()
            gone = [row["id"] for row in rows if self._dead(row)]
            if gone:
                db.execute("DELETE FROM followers WHERE id = ANY(%s)", (gone,))
            following = len(rows) - len(gone)
            if following >= limit:
                return None
            if max_concurrent and following + db.execute(
                    "SELECT count(*) AS n FROM runs WHERE status = 'running' AND token_id = %s "
                    "AND expires_at > now()", (token_id,)).fetchone()["n"] >= max_concurrent:
                return None
            return db.execute("INSERT INTO followers (token_id, worker_host, worker_pid, "
                              "expires_at) VALUES (%s, %s, %s, now() + make_interval("
                              "secs => %s)) RETURNING id",
                              (token_id, self.host, os.getpid(), float(expires_in))
                              ).fetchone()["id"]

    def stop_following(self, follower: int) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM followers WHERE id = %s", (follower,))

    # -- runs whose worker died --------------------------------------------------

    def abort_run(self, run_id: str, token_id: int, attempts: int | None = None,
                  mine: bool = False) -> bool:
        """Mark a running run ``failure``/``ABORTED``: charge its started attempts (the
        stored count or ``attempts``, whichever is larger, at most the reservation) and
        release the rest. False when it is not running (finished meanwhile). ``mine``:
        only if this process (of this host) started it."""
        with self._db.transaction() as db:
            row = db.execute(_ABORTING + "WHERE token_id = %s AND id = %s "
                             "AND status = 'running' AND (%s OR (worker_host = %s "
                             "AND worker_pid = %s)) FOR UPDATE",
                             (token_id, run_id, not mine, self.host, os.getpid())).fetchone()
            return bool(row) and _abort(db, row, attempts)

    def abort_orphans(self) -> int:
        """Abort running runs whose time is up (any host's) or whose worker on this host
        is gone."""
        with self._db.transaction() as db:
            rows = db.execute(_LIVENESS + "WHERE status = 'running'").fetchall()
        return sum(self._abort_row(row["row_id"]) for row in rows if self._dead(row))

    def abort_runs_of_worker(self, pid: int) -> int:
        """Abort the running runs of a worker of this host that has exited."""
        with self._db.transaction() as db:
            rows = db.execute("SELECT row_id FROM runs WHERE status = 'running' "
                              "AND worker_host = %s AND worker_pid = %s",
                              (self.host, pid)).fetchall()
            db.execute("DELETE FROM followers WHERE worker_host = %s AND worker_pid = %s",
                       (self.host, pid))
        return sum(self._abort_row(row["row_id"]) for row in rows)

    def _abort_row(self, row_id: int) -> bool:
        """Abort one run if it is still running and no one else holds it (another host's
        sweep, or its worker finishing it)."""
        with self._db.transaction() as db:
            row = db.execute(_ABORTING + "WHERE row_id = %s AND status = 'running' "
                             "FOR UPDATE SKIP LOCKED", (row_id,)).fetchone()
            return bool(row) and _abort(db, row)

    def _dead(self, row: dict) -> bool:
        """A running run whose time is up, or whose worker on this host is gone."""
        return row["expired"] or (row["worker_host"] == self.host
                                  and not _alive(row["worker_pid"]))

    # -- the store as a whole ----------------------------------------------------

    def prune(self, retention_seconds: float) -> int:
        """Delete finished runs older than the retention."""
        with self._db.transaction() as db:
            return db.execute(
                "DELETE FROM runs WHERE row_id IN (SELECT row_id FROM runs "
                "WHERE status <> 'running' AND created_at < now() - make_interval(secs => %s) "
                "FOR UPDATE SKIP LOCKED)", (float(retention_seconds),)).rowcount

    def check_writable(self) -> None:
        """Raise unless the database can be written right now (readiness)."""
        with self._db.transaction() as db:
            db.execute("INSERT INTO probes (id, checked_at) VALUES (1, now()) "
                       "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at")

    def backup(self, target: str) -> None:
        """Refused: PostgreSQL's own tools back it up."""
        raise NotSupported("a PostgreSQL store is backed up with PostgreSQL's tools "
                           "(pg_dump, or base backups with WAL archiving); `store backup` "
                           "copies SQLite stores only")

    def close(self) -> None:
        self._db.close()


def _abort(db: Any, row: dict, attempts: int | None = None) -> bool:
    """Abort a locked running run: charge its started attempts, release the rest."""
    charged = min(row["reserved"], max(row["attempts"], attempts or 0))
    db.execute("UPDATE tokens SET balance = balance + %s, used = used + %s WHERE id = %s",
               (row["reserved"] - charged, charged, row["token_id"]))
    db.execute("UPDATE runs SET status = 'failure', total_cu = %s, reserved = 0, "
               "finished_at = now(), body = %s, progress = progress + 1 WHERE row_id = %s",
               (charged, aborted_text(row["id"], round(row["age"] * 1000), charged),
                row["row_id"]))
    return True


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
