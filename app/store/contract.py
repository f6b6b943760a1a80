"""What every backend of the store speaks: the refusals it raises, the token it hands
out, and how a token's secret is hashed for storing (SPEC §8)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


class StoreUnavailable(Exception):
    """The database cannot be used right now (locked, read-only, full, missing)."""


class DuplicateRun(Exception):
    """A run with this id exists already."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


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


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
