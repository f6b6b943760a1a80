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
    # 4: a run's start and its finish, each one statement (one round trip from the
    # worker instead of five or six). Inside, each statement sees what committed before
    # it (READ COMMITTED), so the count of runs in flight is taken after the token's
    # row is locked, as before. A start's checks come first and change nothing when
    # they refuse: the run must not exist already (400079), the token must be enabled
    # still (403: its lookup may be cached), the balance must cover the reservation
    # (402), the token's runs in flight must be fewer than its limit (429).
    """
    CREATE FUNCTION runner_start_run(p_run_id text, p_token_id bigint, p_request_id text,
                                     p_reserve bigint, p_expires_in float8,
                                     p_max_concurrent integer, p_host text, p_pid integer,
                                     p_body text, p_graph text,
                                     OUT outcome text, OUT balance bigint, OUT running bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_enabled boolean;
    BEGIN
        running := 0;
        SELECT tokens.balance, tokens.enabled INTO balance, v_enabled FROM tokens
            WHERE id = p_token_id FOR UPDATE;
        IF NOT FOUND THEN
            outcome := 'insufficient'; balance := 0; RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM runs WHERE token_id = p_token_id AND id = p_run_id) THEN
            outcome := 'duplicate'; RETURN;
        END IF;
        IF NOT v_enabled THEN
            outcome := 'disabled'; RETURN;
        END IF;
        IF balance < p_reserve THEN
            outcome := 'insufficient'; RETURN;
        END IF;
        IF p_max_concurrent > 0 THEN  -- its runs and streams in flight: each holds a worker
            SELECT (SELECT count(*) FROM runs WHERE status = 'running'
                        AND token_id = p_token_id AND expires_at > now())
                 + (SELECT count(*) FROM followers
                        WHERE token_id = p_token_id AND expires_at > now())
                INTO running;
            IF running >= p_max_concurrent THEN
                outcome := 'too_many'; RETURN;
            END IF;
        END IF;
        INSERT INTO runs (id, token_id, request_id, status, reserved, worker_host, worker_pid,
                          expires_at, body, graph)
            VALUES (p_run_id, p_token_id, p_request_id, 'running', p_reserve, p_host, p_pid,
                    now() + make_interval(secs => p_expires_in), p_body, p_graph);
        UPDATE tokens SET balance = tokens.balance - p_reserve WHERE id = p_token_id;
        outcome := 'started';
    END $$;
    CREATE FUNCTION runner_finish_run(p_run_id text, p_token_id bigint, p_status text,
                                      p_total_cu bigint, p_body text) RETURNS boolean
    LANGUAGE plpgsql AS $$
    DECLARE
        v_row bigint;
        v_reserved bigint;
    BEGIN
        SELECT row_id, reserved INTO v_row, v_reserved FROM runs
            WHERE token_id = p_token_id AND id = p_run_id AND status = 'running' FOR UPDATE;
        IF NOT FOUND THEN
            RETURN false;  -- aborted meanwhile (taken for dead): its reservation is released
        END IF;
        UPDATE tokens SET balance = balance + v_reserved - p_total_cu,
                          used = used + p_total_cu WHERE id = p_token_id;
        UPDATE runs SET status = p_status, total_cu = p_total_cu, reserved = 0,
                        finished_at = now(), body = p_body, progress = progress + 1
            WHERE row_id = v_row;
        RETURN true;
    END $$
    """,
    # 5: a run's answer (up to 32 MiB of JSON) compressed with lz4, not pglz, where the
    # server has it (PostgreSQL 14 and later, built with lz4, as Debian's): measured on
    # 32 MiB of JSON numbers, pglz took 2.4 s to store it, lz4 0.4 s — time a finished
    # run holds its worker past its deadline (SPEC §3). Values stored before keep theirs.
    """
    DO $$
    BEGIN
        IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings
                        WHERE name = 'default_toast_compression') THEN
            ALTER TABLE runs ALTER COLUMN body SET COMPRESSION lz4;
        END IF;
    END $$
    """,
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
        db.execute(step)  # several statements in one (no parameters: the simple protocol)
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
