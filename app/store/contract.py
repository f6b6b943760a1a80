"""What every backend of the store speaks: the operations the app calls (``Store``), the
refusals it raises, the token it hands out, and how a token's secret is hashed for
storing (SPEC §8)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The database cannot be used right now (locked, read-only, full, missing)."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer version of the code than this one."""

    def __init__(self, found: int, known: int):
        super().__init__(f"the store's schema is at version {found}, newer than this code's "
                         f"{known}: run the newer code, or restore a matching backup")
        self.found, self.known = found, known


class NotSupported(Exception):
    """This backend does not do that; the message says what to use instead."""


class DuplicateRun(Exception):
    """A run with this id exists already."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


class TokenDisabled(Exception):
    """The token was disabled (after the caller looked it up)."""


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


@dataclass(frozen=True)
class RunSummary:
    """One run as the runs list shows it (SPEC §12); ``row``: its place in the list."""
    row: int
    run_id: str
    status: str
    created_at: float  # epoch seconds
    duration_ms: int | None  # None while running
    total_cu: int


@dataclass(frozen=True)
class Balance:
    """A token's compute units (SPEC §12): available, held by runs in flight, spent."""
    balance: int
    reserved: int
    used: int


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store(Protocol):
    """Every operation the app calls on a store, whichever backend serves it."""

    # About how long a finished run's books take per character of its answer: storing
    # it (``finish_run``), with writing its last log lines and sending it. The engine
    # stops a run that much before its deadline, so a large answer still arrives within
    # the deadline's 100 ms (SPEC §3). Measured on each backend, the worst of JSON texts.
    books_s_per_char: float

    def migrate(self) -> None:
        """Create or upgrade the schema; ``SchemaTooNew`` if the database is ahead."""

    def check_writable(self) -> None:
        """Raise unless the database can be written right now (readiness)."""

    def backup(self, target: str) -> None:
        """A consistent copy of the live store at ``target``, or ``NotSupported``."""

    def prune(self, retention_seconds: float) -> int:
        """Delete finished runs older than the retention; how many."""

    def close(self) -> None:
        """Close this process's connections; the next use opens others."""

    def token(self, secret: str) -> Token | None:
        """The token with this secret (looked up by its hash)."""

    def token_by_name(self, name: str) -> Token | None:
        """The token of this name."""

    def tokens(self) -> list[Token]:
        """Every token, by name."""

    def create_token(self, name: str, balance: int, secret: str | None = None) -> str:
        """Store a new token; returns its secret (shown once, never stored)."""

    def ensure_token(self, name: str, secret: str, min_balance: int) -> Token:
        """Create the token if absent, enable it and top it up to ``min_balance``."""

    def top_up(self, name: str, amount: int) -> Token | None:
        """Add ``amount`` to a token's balance; None when there is no such token."""

    def set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable a token; False when there is no such token."""

    def start_run(self, run_id: str, token_id: int, request_id: str | None, reserve: int,
                  expires_in: float, max_concurrent: int = 0, graph: str = "null") -> None:
        """Record a run and reserve ``reserve`` CU, or raise ``DuplicateRun``,
        ``TokenDisabled``, ``InsufficientBalance`` or ``TooManyRuns`` having changed
        nothing (the token's ``enabled`` is read here, not where it was looked up).
        ``expires_in``: seconds from now (the database's clock) after which a run still
        running is dead; ``graph``: the run's graph as JSON text (``run_graph``)."""

    def reserve_more(self, run_id: str, token_id: int, amount: int) -> bool:
        """Reserve more for a running run; False, nothing changed, when it cannot."""

    def record_attempts(self, run_id: str, token_id: int, attempts: int) -> None:
        """Note the attempts the run has started (what it costs if its worker dies)."""

    def finish_run(self, run_id: str, token_id: int, status: str, total_cu: int,
                   text: str) -> None:
        """Store the answer's text as is, charge ``total_cu``, release the rest, atomically."""

    def run_text(self, run_id: str, token_id: int) -> str | None:
        """The stored run's text, only for the token that made it."""

    def run_graph(self, run_id: str, token_id: int) -> str | None:
        """The run's graph as stored when it started (SPEC §14; ``"null"`` for a run
        stored before graphs were), only for the token that made it."""

    def abort_run(self, run_id: str, token_id: int, attempts: int | None = None,
                  mine: bool = False) -> bool:
        """Mark a running run failure/ABORTED, charged for its started attempts; ``mine``:
        only if this process started it."""

    def save_progress(self, run_id: str, token_id: int, attempts: int,
                      text: str | None = None) -> bool:
        """While the run is in flight: note its started attempts and (``text``, when
        given) store its partial state; True when a cancel has been asked for."""

    def request_cancel(self, run_id: str, token_id: int) -> str | None:
        """Ask a running run to stop; its status then (``running`` when asked now, or
        the status it finished with), None when the token has no such run."""

    def follow(self, run_id: str, token_id: int, seen: int) -> tuple[int, str | None] | None:
        """For a follower: how many states the run has written so far, and its text when
        that is more than ``seen`` (a run whose worker is gone is aborted first); None
        when the token has no such run."""

    def list_runs(self, token_id: int, status: str | None, limit: int,
                  before: int | None = None) -> list[RunSummary]:
        """The token's runs newest first, of ``status`` when given, listed before the
        row ``before`` when given (a cursor: stable while runs are added)."""

    def balance(self, token_id: int) -> Balance:
        """The token's balance, what its runs in flight hold, what it has spent."""

    def start_following(self, token_id: int, limit: int, expires_in: float,
                        max_concurrent: int = 0) -> int | None:
        """Count a stream following a run for the token; its id, or None when the token
        has ``limit`` streams already, or ``max_concurrent`` runs and streams together
        (each holds a worker; 0: no such limit). Streams of gone workers, or older than
        ``expires_in`` seconds, are not counted; ``start_run``'s limit counts the
        token's streams too."""

    def stop_following(self, follower: int) -> None:
        """The stream has ended."""

    def abort_orphans(self) -> int:
        """Abort running runs whose worker is gone or whose time is up; how many."""

    def abort_runs_of_worker(self, pid: int) -> int:
        """Abort the running runs of an exited worker of this host, and forget its
        streams; how many runs."""
