"""Tokens, compute-unit balances and run records (SPEC §8), behind one contract.

A backend is a ``Store`` class whose instance every worker process shares by
opening its own connection on first use. It provides:

- ``migrate()`` (create or upgrade its schema), ``check_writable()`` (readiness),
  ``backup(target)``, ``prune(retention_seconds)`` and ``close()``;
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
- runs whose worker died: ``abort_run``, ``abort_orphans`` and
  ``abort_runs_of_worker`` mark them ``failure``/``ABORTED``, charged for the
  attempts they started, never more than their reservation.

No balance ever goes below zero, however many workers run at once. A database
that cannot be used right now raises ``StoreUnavailable``.
"""
from .contract import (
    DuplicateRun,
    InsufficientBalance,
    StoreUnavailable,
    Token,
    TooManyRuns,
    token_hash,
)
from .sqlite import Store
from .sqlite_schema import SCHEMA

__all__ = [
    "SCHEMA",
    "DuplicateRun",
    "InsufficientBalance",
    "Store",
    "StoreUnavailable",
    "Token",
    "TooManyRuns",
    "token_hash",
]
