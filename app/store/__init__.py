"""Tokens, compute-unit balances and run records (SPEC §8, §13), behind one contract.

``open_store(url)`` opens the backend a ``RUNNER_DATABASE_URL`` names: SQLite
(``sqlite:///<path>``, ``sqlite.py``: one host) or PostgreSQL (``postgresql://…``,
``postgres.py``: any number of hosts). Each is a class whose instance every worker
process shares by opening its own connection(s) on first use, and each provides
the operations ``contract.Store`` names:

- ``migrate()`` (create or upgrade its schema; ``SchemaTooNew`` when the database
  was migrated by newer code), ``check_writable()`` (readiness),
  ``backup(target)`` (or ``NotSupported``), ``prune(retention_seconds)`` and ``close()``;
- tokens, stored as hashes of their secrets (``token_hash``) and handed out as
  ``Token``: ``token``, ``token_by_name``, ``tokens``, ``create_token``,
  ``ensure_token``, ``top_up``, ``set_enabled``;
- runs, each named by its token and its ``runId`` together: ``start_run``
  reserves the worst-case cost or raises ``DuplicateRun``, ``InsufficientBalance``
  or ``TooManyRuns`` having changed nothing; ``reserve_more`` reserves more for a
  running run (a loop starting) or answers False having changed nothing;
  ``record_attempts`` notes what the run has started; ``finish_run`` stores the
  answer's JSON text as it is, charges ``total_cu`` and releases the rest,
  atomically; ``run_text`` serves that text back, unparsed, to the token that
  made the run;
- run control (SPEC §12): ``save_progress`` stores a run's partial state and says
  whether a cancel was asked for (``request_cancel``); ``follow`` serves a run's
  latest state to a stream following it, ``start_following``/``stop_following``
  count those streams per token; ``list_runs`` and ``balance``;
- runs whose worker died: ``abort_run``, ``abort_orphans`` and
  ``abort_runs_of_worker`` mark them ``failure``/``ABORTED``, charged for the
  attempts they started, never more than their reservation.

No balance ever goes below zero, however many workers (and hosts) run at once. A
database that cannot be used right now raises ``StoreUnavailable``.
"""
from __future__ import annotations

from .contract import (
    Balance,
    DuplicateRun,
    InsufficientBalance,
    NotSupported,
    RunSummary,
    SchemaTooNew,
    Store,
    StoreUnavailable,
    Token,
    TokenDisabled,
    TooManyRuns,
    token_hash,
)
from .sqlite import SQLiteStore
from .sqlite_schema import SCHEMA


def open_store(url: str, busy_ms: int = 5000, host: str = "",
               synchronous: str = "NORMAL") -> Store:
    """The store ``url`` names (``sqlite:///<path>`` or ``postgresql://…``); nothing is
    connected until first use. ``busy_ms``: how long an operation waits for a lock or
    a connection; ``host``: this host's name in its runs ("": the host name; PostgreSQL
    only); ``synchronous``: SQLite's ``synchronous`` (``NORMAL`` or ``FULL``; SQLite
    only). ``ValueError`` for a URL of neither kind."""
    from ..config import parse_database_url

    kind, where = parse_database_url(url)
    if kind == "sqlite":
        return SQLiteStore(where, busy_ms, synchronous)
    from .postgres import PostgresStore  # the driver is loaded only where it is used

    return PostgresStore(where, busy_ms, host or None)


__all__ = [
    "SCHEMA",
    "Balance",
    "DuplicateRun",
    "InsufficientBalance",
    "NotSupported",
    "RunSummary",
    "SQLiteStore",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "Token",
    "TokenDisabled",
    "TooManyRuns",
    "open_store",
    "token_hash",
]
