"""The life of one run, without Flask: reserve → execute → store and charge → count → log.

Callers (the ``/v1`` views: a sync run, streamed or not, and a run started without
waiting, which runs after its answer) pass plain values — the store, the settings,
the checked request, the token, the request id, when the request was read — and
map the refusals raised here
(``DuplicateRun``, ``TokenDisabled``, ``InsufficientBalance``, ``TooManyRuns``,
``HardStop``, and the store's ``StoreUnavailable``) to answers of their own.

While it runs, its partial state is written to the store every half second when it
has changed, and a cancel asked for through the store stops it (``_watch``).

A run's log lines are written together at its end, its secrets redacted in
them as in its answer. A run stopped before it finishes (a bug, or gunicorn's
hard time limit) is charged for the attempts it started (SPEC §3); the rest of
its reservation is released.

A run whose books cannot be written (the store went away meanwhile) leaves them to
its process: ``settle`` writes them once the store answers again, before the
process's next run and at each readiness check, so no run stays reserved after the
store is back. A process that exits first leaves them to its master's sweep.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import config, logconfig, metrics
from .engine import Run
from .jstext import iso
from .plan import RunRequest
from .redact import Redactor
from .state import Outcome, dumps
from .store import (
    DuplicateRun,
    InsufficientBalance,
    Store,
    StoreUnavailable,
    TokenDisabled,
    TooManyRuns,
)

__all__ = ["DuplicateRun", "HardStop", "InsufficientBalance", "Life", "TokenDisabled",
           "TooManyRuns", "run"]

log = logging.getLogger("app.runs")

PRUNE_EVERY_S = 3600  # runs past their retention are deleted
# Runs whose worker is gone (another host's once their hard limit has passed) are
# aborted and their reservations released, without waiting for a read or a restart.
SWEEP_EVERY_S = 60
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]  # 10 bits → 2 digits
# A random byte → a digit from its low 5 bits (a translation table for bytes.translate).
_DIGIT_OF_BYTE = bytes(ord(_CROCKFORD[byte & 31]) for byte in range(256))


def new_run_id() -> str:
    """``run_`` + a ULID in lowercase: 48 bits of milliseconds (10 digits, taken two at a
    time), then 80 random bits: 16 digits of 5 random bits each, each a random byte's low
    five (no arithmetic on a 128-bit number: a third of the instructions)."""
    ms, pairs = int(time.time() * 1000), _PAIRS
    return (f"run_{pairs[ms >> 40 & 1023]}{pairs[ms >> 30 & 1023]}{pairs[ms >> 20 & 1023]}"
            f"{pairs[ms >> 10 & 1023]}{pairs[ms & 1023]}"
            f"{os.urandom(16).translate(_DIGIT_OF_BYTE).decode()}")


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
    life = Life(store, settings, request, token_id, request_id, received)
    life.reserve()
    return life.finish()


class Life:
    """One run's life, in two steps a caller may separate: ``reserve`` (its refusals
    raise there, before anything is answered), then ``finish`` (run to the end) or
    ``passes`` (the same, pausing after each pass of the engine with the events it
    made, for a stream: SPEC §12). ``outcome`` once done."""

    def __init__(self, store: Store, settings: Mapping[str, Any], request: RunRequest,
                 token_id: int, request_id: str | None, received: float,
                 stream: bool = False):
        self.store, self.settings, self.request = store, settings, request
        self.token_id, self.request_id, self.received = token_id, request_id, received
        self.run_id = request.run_id or new_run_id()
        self.stream = stream
        self.outcome: Outcome | None = None

    def reserve(self) -> None:
        """Record the run and reserve its cost; ``DuplicateRun``, ``TokenDisabled``,
        ``InsufficientBalance`` or ``TooManyRuns`` when that is refused
        (``StoreUnavailable`` when it cannot be asked)."""
        settle()
        settings = self.settings
        try:
            self.store.start_run(self.run_id, self.token_id, self.request_id,
                                 self.request.plan.worst_case_cu,
                                 config.run_expiry_s(settings),
                                 settings["MAX_CONCURRENT_RUNS"], graph=self.graph_text())
        except StoreUnavailable:
            # A reservation whose commit was cut off may be stored all the same: abort it
            # (nothing ran, nothing is charged) once the store is back — only if this
            # process made it: a client that retries with the same runId may have started
            # it anew through another worker meanwhile.
            _keep(functools.partial(self.store.abort_run, self.run_id, self.token_id, 0,
                                    mine=True))
            raise

    def graph_text(self) -> str:
        """The run's graph (SPEC §14), as JSON text: its definition's shape (no payloads),
        when the run started (its deadline counts from there) and its deadline."""
        started = time.time() - (time.monotonic() - self.received)
        run_id, deadline = self.run_id, self.request.timeout_ms or self.settings["RUN_DEADLINE_MS"]
        if not (run_id.isascii() and run_id.isidentifier() and type(deadline) is int):
            head = dumps({"runId": run_id, "startedAt": iso(started), "deadlineMs": deadline})
            return f'{head[:-1]},"nodes":{self.request.plan.shape_text}}}'
        # What dumps writes for them: letters, digits and "_" need no escape, nor the time.
        return (f'{{"runId":"{run_id}","startedAt":"{iso(started)}","deadlineMs":{deadline},'
                f'"nodes":{self.request.plan.shape_text}}}')

    def finish(self) -> Outcome:
        """Run it to the end: the outcome, stored, charged, counted and logged (as
        ``passes`` does, without pausing: the engine's own loop, one generator less)."""
        with logconfig.batched():  # the run's log lines, written together at its end
            engine = self._engine()
            with _Running(self, engine):
                self.outcome = engine.run()
            self._books()
        return self.outcome

    def passes(self) -> Iterator[list[tuple[str, str]]]:
        """Run it, yielding after each pass of the engine the events it made (streamed:
        ``run.started`` first, ``run.finished`` with the answer's text last, after the
        answer is stored; else nothing). A pass without events yields an empty batch
        (at least every ``engine.TICK_S``), so the stream's keep-alive is written while a
        node waits. The events of the engine's last pass go with ``run.finished`` (one
        write at the run's end), or before the error when its books cannot be written.
        Closed early (the client left), the run goes on to its end unseen, its engine
        making no more events."""
        with logconfig.batched():  # the run's log lines, written together at its end
            engine = self._engine()
            listening = self.stream
            if listening:
                try:
                    yield [("run.started", dumps({"runId": self.run_id}))]
                except GeneratorExit:  # the client left: run on, unseen
                    listening = False
                    engine.events = None
            with _Running(self, engine):
                for over in engine.passes():
                    if listening and not over:
                        events, engine.events = engine.events, []
                        try:
                            yield events
                        except GeneratorExit:  # the client left: run on, unseen
                            listening = False
                            engine.events = None
                self.outcome = engine.outcome()
            try:
                self._books()
            except Exception:
                if listening and engine.events:
                    yield engine.events  # what the run did, then the error (the caller's)
                raise
        if listening:
            engine.events.append(("run.finished", self.outcome.text))
            yield engine.events

    def _engine(self) -> Run:
        """The run's engine, its progress and cancels going through the store."""
        store, run_id, token_id = self.store, self.run_id, self.token_id
        return Run(self.request, run_id, settings=self.settings,
                   deadline_ms=self.settings["RUN_DEADLINE_MS"],
                   redactor=Redactor.for_request(self.request),
                   on_progress=lambda attempts: store.record_attempts(
                       run_id, token_id, attempts),
                   reserve=lambda cu: store.reserve_more(run_id, token_id, cu),
                   started=self.received, tick=_watch(store, run_id, token_id),
                   stream=self.stream, books_s_per_char=store.books_s_per_char)

    def _books(self) -> None:
        """The outcome stored and charged (before it is answered), counted and logged."""
        store, run_id, token_id, outcome = self.store, self.run_id, self.token_id, self.outcome
        try:
            store.finish_run(run_id, token_id, outcome.status, outcome.total_cu, outcome.text)
        except StoreUnavailable:
            _keep(functools.partial(store.finish_run, run_id, token_id, outcome.status,
                                    outcome.total_cu, outcome.text))
            raise
        metrics.record_run(outcome)
        _upkeep(store, self.settings["RUN_RETENTION_DAYS"])
        logconfig.info(log, "run finished", {
            "runId": run_id, "status": outcome.status, "durationMs": outcome.duration_ms,
            "nodeCount": len(self.request.plan.nodes), "totalCu": outcome.total_cu,
            "errorCode": (outcome.error or {}).get("code")})


class _Running:
    """Around the engine's loop: its redactor for the run's log lines, the run counted
    in progress; a run stopped before its end (a bug, gunicorn stopping the worker, the
    store) is charged for the attempts it started (SPEC §3), the rest released. (A
    class: its ``__enter__`` and ``__exit__`` cost a run less than a generator's.)"""

    __slots__ = ("engine", "life", "redacting")

    def __init__(self, life: Life, engine: Run):
        self.life, self.engine = life, engine

    def __enter__(self) -> None:
        self.redacting = logconfig.redactor.set(self.engine.redactor)
        metrics.add_running(1)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> bool:
        try:
            metrics.add_running(-1)
            if kind is None:
                return False
            life, engine = self.life, self.engine
            # The first error is the one to report.
            abort = functools.partial(life.store.abort_run, life.run_id, life.token_id,
                                      engine.started_attempts)
            try:
                abort()
            except StoreUnavailable:
                _keep(abort)
            if issubclass(kind, SystemExit):
                # gunicorn's hard timeout: the caller answers; the worker exits after.
                raise HardStop(life.run_id) from None
            return False
        finally:
            logconfig.redactor.reset(self.redacting)


def _watch(store: Store, run_id: str, token_id: int) -> Callable[[Run], bool]:
    """The engine's ``tick`` for a run in flight (every ``engine.TICK_S``): store its
    partial state when it has changed, so a reader sees it at most that old; True when
    a cancel has been asked for (SPEC §12). A store away meanwhile waits: the run goes
    on."""
    seen = [-1]

    def tick(engine: Run) -> bool:
        text = None
        if engine.changes != seen[0]:
            seen[0], text = engine.changes, engine.partial_text()
        try:
            return store.save_progress(run_id, token_id, engine.started_attempts, text)
        except StoreUnavailable:
            return False
    return tick


# Books this process could not write, oldest first: each a store call to make again.
_unwritten: list[Callable[[], object]] = []


def _keep(again: Callable[[], object]) -> None:
    """Keep ``again``, a store call that met ``StoreUnavailable``, for ``settle``."""
    _unwritten.append(again)
    log.warning("store unavailable: a run's books wait for it (%d waiting)", len(_unwritten))


def settle() -> None:
    """Write the books of this process's runs that ended while the store was away;
    those it still cannot write wait for the next call."""
    while _unwritten:
        try:
            _unwritten[0]()
        except StoreUnavailable:
            return
        except Exception:  # never retried forever
            log.exception("a run's books could not be written; its expiry will settle them")
        _unwritten.pop(0)


_due = {"sweep": 0.0, "prune": 0.0}  # when this process does each again (monotonic)


def _reset_after_fork() -> None:
    _due.update(sweep=0.0, prune=0.0)  # each process keeps its own timers
    _unwritten.clear()  # the parent's to write


os.register_at_fork(after_in_child=_reset_after_fork)


def _upkeep(store: Store, retention_days: int) -> None:
    """After a run, now and then per process: abort the runs of dead workers (every
    ``SWEEP_EVERY_S``), delete runs past their retention (every ``PRUNE_EVERY_S``)."""
    now = time.monotonic()
    # The run is answered and its books written: a store gone meanwhile can wait.
    try:
        if now >= _due["sweep"]:
            _due["sweep"] = now + SWEEP_EVERY_S
            store.abort_orphans()
        if now >= _due["prune"]:
            _due["prune"] = now + PRUNE_EVERY_S
            store.prune(retention_days * 86400)
    except StoreUnavailable:
        pass
