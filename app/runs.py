"""The life of one run, without Flask: reserve → execute → store and charge → count → log.

Callers (the ``/v1`` views; later the CLI, streaming and async endpoints) pass
plain values — the store, the settings, the checked request, the token, the
request id, when the request was read — and map the refusals raised here
(``DuplicateRun``, ``InsufficientBalance``, ``TooManyRuns``, ``HardStop``,
and the store's ``StoreUnavailable``) to answers of their own.

A run's log lines are written together at its end, its secrets redacted in
them as in its answer. A run stopped before it finishes (a bug, or gunicorn's
hard time limit) is charged for the attempts it started (SPEC §3); the rest of
its reservation is released.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from . import config, logconfig, metrics
from .engine import Run
from .plan import RunRequest
from .redact import Redactor
from .state import Outcome
from .store import DuplicateRun, InsufficientBalance, Store, StoreUnavailable, TooManyRuns

__all__ = ["DuplicateRun", "HardStop", "InsufficientBalance", "TooManyRuns", "run"]

log = logging.getLogger("app.runs")

PRUNE_EVERY_S = 3600
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """``run_`` + a ULID in lowercase: 48 bits of milliseconds, then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "run_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class HardStop(Exception):
    """The run was stopped before it finished: gunicorn's hard time limit (SystemExit)."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


def run(store: Store, settings: Mapping[str, Any], request: RunRequest, token_id: int,
        request_id: str | None, received: float) -> Outcome:
    """Reserve the worst-case cost, run, store the answer and charge it, count, log.

    ``settings``: every RUNNER_ setting (node handlers read them as ``ctx.settings``);
    ``received``: when the request was read (``time.monotonic()``), where the
    run's deadline counts from.
    """
    run_id = request.run_id or new_run_id()
    with logconfig.batched():  # the run's log lines, written together at its end
        _reserve(store, settings, run_id, token_id, request_id, request.plan.worst_case_cu)
        outcome = _execute(store, settings, request, run_id, token_id, received)
        store.finish_run(run_id, token_id, outcome.status, outcome.total_cu, outcome.text)
        metrics.record_run(outcome)
        _prune_now_and_then(store, settings["RUN_RETENTION_DAYS"])
        log.info("run finished", extra={
            "runId": run_id, "status": outcome.status, "durationMs": outcome.duration_ms,
            "nodeCount": len(request.plan.nodes), "totalCu": outcome.total_cu,
            "errorCode": (outcome.error or {}).get("code")})
    return outcome


def _reserve(store: Store, settings: Mapping[str, Any], run_id: str, token_id: int,
             request_id: str | None, worst_case_cu: int) -> None:
    """Record the run and reserve its cost; DuplicateRun, InsufficientBalance or
    TooManyRuns when that is refused."""
    store.start_run(run_id, token_id, request_id, worst_case_cu, config.run_expiry_s(settings),
                    settings["MAX_CONCURRENT_RUNS"])


def _execute(store: Store, settings: Mapping[str, Any], request: RunRequest, run_id: str,
             token_id: int, received: float) -> Outcome:
    """The run's outcome, secrets redacted (in the logs written meanwhile too)."""
    redactor = Redactor.for_request(request)
    run = Run(request, run_id, settings=settings, deadline_ms=settings["RUN_DEADLINE_MS"],
              redactor=redactor,
              on_progress=lambda attempts: store.record_attempts(run_id, token_id, attempts),
              reserve=lambda cu: store.reserve_more(run_id, token_id, cu),
              started=received)
    redacting = logconfig.redactor.set(redactor)
    try:
        with metrics.IN_PROGRESS.track_inprogress():
            return run.run()
    except BaseException as error:  # a bug, or gunicorn stopping the worker (SystemExit)
        with contextlib.suppress(StoreUnavailable):  # the first error is the one to report
            # Charged for the attempts it started (SPEC §3); the rest is released.
            store.abort_run(run_id, token_id, run.started_attempts)
        if isinstance(error, SystemExit):
            # gunicorn's hard timeout: the caller answers; the worker exits after.
            raise HardStop(run_id) from None
        raise
    finally:
        logconfig.redactor.reset(redacting)


_next_prune = 0.0


def _reset_after_fork() -> None:
    global _next_prune
    _next_prune = 0.0  # each process keeps its own timer


os.register_at_fork(after_in_child=_reset_after_fork)


def _prune_now_and_then(store: Store, retention_days: int) -> None:
    """Delete runs past their retention, at most once an hour per process."""
    global _next_prune
    if time.monotonic() >= _next_prune:
        _next_prune = time.monotonic() + PRUNE_EVERY_S
        store.prune(retention_days * 86400)
