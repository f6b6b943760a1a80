"""The PostgreSQL store's schema, as versioned migrations applied at start-up.

``schema_migrations`` holds one row per migration applied. Every host runs
``upgrade`` as it starts; they take turns under one transaction-scoped advisory lock,
so each migration is applied once, by whichever host comes first, and a migration
that fails leaves the database at its old version. Migrations are only ever
appended. A database at a version this code does not know was migrated by newer
code: ``SchemaTooNew``.

Times are the database's (``timestamptz`` set from ``now()``), never a host's.
"""
from __future__ import annotations

import psycopg

from .contract import SchemaTooNew

# pg_advisory_xact_lock's key: any constant, the same for every host ("runr").
MIGRATION_LOCK = 0x72756E72

MIGRATIONS = [
    # 1: tokens (hashes only), runs (a runId is unique per token; the attempts started are
    # what a run whose worker dies is charged; the host and pid of its worker), probes.
    """
    CREATE TABLE tokens (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        hash text NOT NULL UNIQUE,
        balance bigint NOT NULL CHECK (balance >= 0),
        enabled boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE runs (
        row_id bigserial PRIMARY KEY,
        id text NOT NULL,
        token_id bigint NOT NULL REFERENCES tokens(id),
        request_id text,
        status text NOT NULL,
        reserved bigint NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        total_cu bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        worker_host text NOT NULL,
        worker_pid integer NOT NULL,
        expires_at timestamptz NOT NULL,
        body text NOT NULL,
        UNIQUE (token_id, id)
    );
    CREATE INDEX runs_created_at ON runs (created_at);
    CREATE INDEX runs_running ON runs (token_id) WHERE status = 'running';
    CREATE TABLE probes (id integer PRIMARY KEY CHECK (id = 1), checked_at timestamptz NOT NULL)
    """,
    # 2: run control (SPEC §12): a cancel asked for; a count of the partial states (and
    # the final one) written, which followers compare; a token's CU used so far; the
    # token's runs newest first; the streams following runs, counted per token.
    """
    ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
                     ADD COLUMN progress bigint NOT NULL DEFAULT 0;
    ALTER TABLE tokens ADD COLUMN used bigint NOT NULL DEFAULT 0;
    UPDATE tokens SET used = (SELECT coalesce(sum(total_cu), 0) FROM runs
                              WHERE runs.token_id = tokens.id);
    CREATE INDEX runs_by_token ON runs (token_id, row_id);
    CREATE TABLE followers (
        id bigserial PRIMARY KEY,
        token_id bigint NOT NULL,
        worker_host text NOT NULL,
        worker_pid integer NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    # 3: the run viewer (SPEC §14): each run's graph — its definition's shape, when it
    # started, its deadline — as JSON text; 'null' for the runs stored before.
    "ALTER TABLE runs ADD COLUMN graph text NOT NULL DEFAULT 'null'",
]


def version(db: psycopg.Connection) -> int:
    """The last migration applied (0: an empty database)."""
    row = db.execute("SELECT max(version) AS version FROM schema_migrations").fetchone()
    return row["version"] or 0


def upgrade(db: psycopg.Connection) -> None:
    """Apply the migrations this database lacks, inside the caller's transaction."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
               "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    found = version(db)
    if found > len(MIGRATIONS):
        raise SchemaTooNew(found, len(MIGRATIONS))
    for number, step in enumerate(MIGRATIONS[found:], start=found + 1):
        for statement in filter(str.strip, step.split(";")):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
