"""What every node type shares: its declaration, its error value, its run context.

A node type is a ``NodeType`` record, declared once at the end of its module
(``NODE = NodeType(...)``) and registered in ``app.nodes.NODE_TYPES``:

- ``name``: the ``type`` of a definition's node;
- ``payload``: a ``PayloadSchema`` subclass describing the payload, written with
  the fields of ``app.dialect``; checked once on literal values at validation
  and once on resolved values before each attempt (``dialect.load``);
- ``run(data, ctx) -> dict``: the handler; ``data`` is the loaded payload
  (defaults applied, unknown keys dropped), which the handler trusts: what the
  schema checks is not checked again; it returns the node's result or raises
  ``NodeError``;
- ``result``: the JSON Schema of that result (listed by ``GET /v1/node-types``);
- ``inline``: True for pure, quick handlers that may run on the scheduling
  thread, or ``inline_when(data) -> bool`` for handlers that are quick on small
  inputs only;
- ``max_timeout_ms`` (default 60000), ``timeout_field`` (a payload key, in ms,
  that also limits the attempt) and ``condition_fields`` (payload keys holding
  a condition whose object keys are expressions too);
- ``cu_per_attempt``: what each started attempt costs (SPEC §8).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import EXCLUDE, Schema

from ..failure import NodeError

DEFAULT_MAX_TIMEOUT_MS = 60_000
# Up to this many items, a handler that walks an array once is quick enough (well
# under a millisecond) to run on the scheduling thread and save a thread hand-off.
SMALL_ARRAY = 1000
# Text a handler builds (format) may be at most this long.
MAX_TEXT_CHARS = 4 * 1024 * 1024


def small_array(data: dict) -> bool:
    """``inline`` for handlers that walk ``data["array"]`` once."""
    array = data.get("array")
    return isinstance(array, list) and len(array) <= SMALL_ARRAY


@dataclass(frozen=True, eq=False)  # one record per type: compared by identity
class NodeType:
    """A node type as the registry, validation and the engine know it."""

    name: str
    payload: type[Schema]
    run: Callable[[dict, NodeContext], dict]
    result: Mapping[str, Any]  # JSON Schema of what ``run`` returns
    inline: bool = False  # always runs on the scheduling thread
    inline_when: Callable[[dict], bool] | None = None  # …or when this says so
    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS
    timeout_field: str | None = None
    condition_fields: tuple[str, ...] = ()
    cu_per_attempt: int = 1  # SPEC §8: each started attempt costs 1 CU, the trigger none

    def runs_inline(self, data: dict) -> bool:
        """Whether an attempt on ``data`` runs on the scheduling thread."""
        return self.inline or (self.inline_when is not None and self.inline_when(data))


def result_object(properties: Mapping[str, Any], *, more: bool = False) -> dict:
    """The JSON Schema of a result object with all of ``properties`` (and other keys
    only when ``more``)."""
    return {"type": "object", "required": list(properties), "properties": dict(properties),
            "additionalProperties": more}


class Cancel(threading.Event):
    """An attempt's cancel flag that remembers when it was set (the pool's watchdog
    looks for threads still busy long after their attempt was given up)."""

    set_at: float | None = None

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


@dataclass
class NodeContext:
    """What a handler may use besides its payload; never Flask's globals."""

    run_id: str
    node_id: str
    deadline: float  # time.monotonic() by which this attempt must end
    cancelled: threading.Event = field(default_factory=threading.Event)
    settings: Mapping[str, Any] = field(default_factory=dict)
    resolve: Callable[[str], Any] = lambda text: text
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("app.nodes"))

    def time_left(self) -> float:
        """Seconds until this attempt must end (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise ``TIMEOUT`` once the attempt is cancelled or past its limit.

        Loops over data whose size the request controls call this at least
        every few milliseconds of work (every ~1000 cheap items), so no handler,
        inline or pooled, runs on after its attempt has ended (SPEC §3).
        """
        if self.cancelled.is_set() or time.monotonic() >= self.deadline:
            raise NodeError("TIMEOUT", "The attempt exceeded its time limit.", retryable=True)


class PayloadSchema(Schema):
    """Unknown payload keys are accepted and ignored (SPEC §1)."""

    class Meta:
        unknown = EXCLUDE
