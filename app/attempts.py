"""One attempt of one node, apart from the scheduling around it (SPEC §3): the
input's condition keys, the attempt's time limit, calling the handler on this
thread or a pool thread, and when a failed attempt is tried again.

Nothing here touches a run's state: the engine (app/engine.py) owns it, and
hands these functions what they need.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .expressions import Budget, ExpressionError, is_template
from .nodes.base import Cancel, NodeContext, NodeError
from .plan import PlanNode

log = logging.getLogger("app.engine")

# Errors that another attempt cannot fix, whatever the node's retryOn says.
NEVER_RETRIED = {"BLOCKED_DESTINATION", "OUTPUT_TOO_LARGE"}

# The cancel flag of every inline attempt: never set (an inline handler is bounded by
# ctx.check() against its limit), so ``call`` need not look at it.
NEVER_CANCELLED = Cancel()

TextOf = Callable[[Any, Callable[[], None]], str]  # (result, check) → its JSON text


def until(deadline: float) -> Callable[[], None]:
    """A check that raises TIMEOUT once ``deadline`` (monotonic) has passed."""
    def check() -> None:
        if time.monotonic() >= deadline:
            raise NodeError("TIMEOUT", "The run deadline passed.", True)
    return check


def limit_ms(node: PlanNode, data: dict) -> float:
    """An attempt's time limit: the smallest of the node's, the payload's and the type's
    (the run's deadline is applied by the caller)."""
    node_type = node.node_type
    limits = [node_type.max_timeout_ms]
    if node.timeout_ms:
        limits.append(node.timeout_ms)
    own = node_type.timeout_field
    if own and isinstance(data.get(own), (int, float)):
        limits.append(data[own])
    return max(0.0, min(limits))


def retry_wait_ms(node: PlanNode, attempts: int, error: NodeError) -> float | None:
    """How long to wait before the next attempt after ``attempts`` attempts that ended in
    ``error``, or None when the node fails now (its retry policy, SPEC §3)."""
    retry = node.retry
    if not retry or attempts >= retry["maxAttempts"] or error.code in NEVER_RETRIED:
        return None
    retry_on = retry.get("retryOn")
    if not (error.code in retry_on if retry_on is not None else error.retryable):
        return None
    return min(retry["initialDelayMs"] * retry["backoffRate"] ** (attempts - 1),
               retry["maxDelayMs"])


def condition_keys(node: PlanNode, data: dict, resolve_key: Callable[[str, Budget], Any],
                   budget: Budget) -> Callable[[str], Any]:
    """The condition keys of ``data`` that hold expressions, resolved now within the
    input's budget (SPEC §3: condition keys count in it); a lookup for the handler."""
    resolved: dict[str, Any] = {}
    stack = [data[name] for name in node.node_type.condition_fields if name in data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if is_template(key):
                    try:
                        found = resolve_key(key, budget)
                    except ExpressionError as error:
                        raise ExpressionError(f"condition key {key!r}: {error}") from None
                    resolved[key] = found
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
    return lambda key: resolved.get(key, key)  # no holes: the text as written


def call(node: PlanNode, data: dict, ctx: NodeContext, text_of: TextOf
         ) -> tuple[Any, str | None]:
    """A handler's outcome as a value — its result, or a ``NodeError`` — and the result's
    text as it leaves the process (redacted, size-checked, within the attempt's limit)."""
    try:
        result = node.node_type.run(data, ctx)
        cancelled = ctx.cancelled
        if cancelled is not NEVER_CANCELLED and cancelled.is_set():
            raise NodeError("TIMEOUT", "The attempt exceeded its time limit.", True)
        return result, text_of(result, ctx.check)
    except NodeError as error:
        return error, None
    except UnicodeError:  # a value that cannot be encoded (an unpaired surrogate)
        return NodeError("INVALID_INPUT", "A value is not valid Unicode (an unpaired "
                         "surrogate) and cannot be encoded."), None
    except Exception:  # a bug in a handler must not become a 500 or a traceback
        log.exception("node handler raised", extra={"runId": ctx.run_id, "nodeId": ctx.node_id})
        return NodeError("INTERNAL", f"Node type {node.type!r} failed unexpectedly."), None


def run_pooled(node: PlanNode, data: dict, ctx: NodeContext, attempt: int,
               ended: Callable[[str, int, Any, str | None, float], Any], text_of: TextOf
               ) -> Any:
    """``call`` on a pool thread: the outcome goes back to the engine through ``ended``,
    named by the instance it is for (``ctx.node_id``), with the time it ended, by which
    the engine judges it; what ``ended`` returns is this thread's next task (pool.py)."""
    outcome, text = call(node, data, ctx, text_of)
    return ended(ctx.node_id, attempt, outcome, text, time.monotonic())
