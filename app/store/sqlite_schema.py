"""The SQLite store's schema, as the steps that build it one version at a time.

``PRAGMA user_version`` counts the steps a database has run; a step is SQL or a
function of the connection. Steps are only ever appended: a database made by
any earlier version is brought up to date by the ones it has not run.
"""
from __future__ import annotations

import sqlite3

from .contract import SchemaTooNew


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
    # 4: run control (SPEC §12): a cancel asked for; a count of the partial states (and
    # the final one) written, which followers compare; a token's CU used so far; the
    # token's runs newest first; the streams following runs, counted per token.
    """
    ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tokens ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
    UPDATE tokens SET used = (SELECT COALESCE(SUM(total_cu), 0) FROM runs
                              WHERE runs.token_id = tokens.id);
    CREATE INDEX runs_by_token ON runs (token_id, row_id);
    CREATE TABLE followers (
        id INTEGER PRIMARY KEY,
        token_id INTEGER NOT NULL,
        worker_pid INTEGER NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    # 5: the run viewer (SPEC §14): each run's graph — its definition's shape, when it
    # started, its deadline — as JSON text; "null" for the runs stored before.
    "ALTER TABLE runs ADD COLUMN graph TEXT NOT NULL DEFAULT 'null'",
]


def upgrade(db: sqlite3.Connection) -> None:
    """Run the steps of ``SCHEMA`` this database has not run yet, inside the caller's
    transaction (so a step that fails leaves the database at its old version); a
    database past the last step was made by newer code: ``SchemaTooNew``."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(SCHEMA):
        raise SchemaTooNew(version, len(SCHEMA))
    for number, step in enumerate(SCHEMA[version:], start=version + 1):
        if callable(step):
            step(db)
        else:
            for statement in filter(str.strip, step.split(";")):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
