"""Following a run from any worker of any host (SPEC §12): its events, read from the store.

The worker running a run writes its partial state to the store every half second while
it changes (``runs._watch``) and its final state at the end; a follower reads the
state whenever the run has written a new one and turns the difference into events:
``node.started`` for each attempt it sees begin, ``node.finished`` for each entry that
became final, and ``run.finished`` with the stored answer once the run has ended. So
what happened so far is replayed at once, and a finished run gives all of its events
together. Seen from another worker, an attempt that began and ended between two reads
gives its ``node.finished`` only, and retries show as the attempts they start
(``node.retrying`` comes only from the run's own stream).

A long run's state is mostly entries already final, and those never change: each
read decodes only the entries whose text it has not seen final yet, and a
``node.finished`` event carries the entry's stored text as it is. (Decoding the whole
state at every read and encoding each entry again cost a follower 40–60 ms of CPU over
a busy 3-second loop of 300 node instances, 2 % of the run's own; now 16–26 ms, under
1 %: ``python -m bench.follow``.)
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from .state import dumps
from .store import Store

# How often the store is read: as often as a run writes its state (engine.TICK_S).
POLL_S = 0.5
_DECODER = json.JSONDecoder()
_ENTRIES = ',"executionState":{'  # where ``state.body_text`` starts the entries


def events(store: Store, run_id: str, token_id: int, wait: Callable[[float], bool],
           until: float) -> Iterator[list[tuple[str, str]]]:
    """The run's events in batches, a batch at least every ``POLL_S``, ending with
    ``run.finished``; or earlier when ``wait`` says the client has left, when the run
    is gone (pruned), or at ``until`` (monotonic) if the run is still in flight then —
    only a run whose worker died on another host lasts that long."""
    seen, attempts, final = -1, {}, {}
    batch = [("run.started", dumps({"runId": run_id}))]
    while True:
        found = store.follow(run_id, token_id, seen)
        if found is None:
            return
        seen, text = found[0], found[1]
        if text is not None:
            status, entries = _read(text, final)
            for node_id, entry, entry_text in entries:
                batch.extend(_node_events(node_id, entry, entry_text, attempts, final))
            if status != "running":
                batch.append(("run.finished", text))
                yield batch
                return
        yield batch
        batch = []
        if time.monotonic() >= until or not wait(POLL_S):
            return


def _read(text: str, final: dict[str, str]) -> tuple[str, list[tuple[str, dict, str]]]:
    """The status of a stored body and its entries as ``(node id, entry, its text)``,
    but for those whose text is ``final``'s for them: skipped, not decoded.

    A body as ``state.body_text`` writes it is compact: the summary's fields, then
    ``executionState`` last, its node ids needing no escapes (and no string in the
    summary can hold ``_ENTRIES``: its quotes would be escaped). Text of another
    layout is decoded whole."""
    start = text.find(_ENTRIES)
    if start < 0:
        body = json.loads(text)
        return body["status"], [(node_id, entry, dumps(entry)) for node_id, entry
                                in body.get("executionState", {}).items()]
    status = json.loads(text[:start] + "}")["status"]
    at, found = start + len(_ENTRIES), []
    while text.startswith('"', at):
        end = text.index('":', at + 1)
        node_id, at = text[at + 1:end], end + 2
        known = final.get(node_id)
        if known is not None and text.startswith(known, at):
            at += len(known)  # the same text: the same entry, one JSON object
        else:
            entry, end = _DECODER.raw_decode(text, at)
            found.append((node_id, entry, text[at:end]))
            at = end
        if text.startswith(",", at):
            at += 1
    if text[at:] != "}}":
        raise ValueError(f"not a body as state.body_text writes it: {text[at:at + 40]!r}")
    return status, found


def _node_events(node_id: str, entry: dict, text: str, attempts: dict[str, int],
                 final: dict[str, str]) -> list[tuple[str, str]]:
    """The events of one entry not yet sent: ``node.started`` per attempt begun, then
    ``node.finished`` once it is final (``final`` then keeps its ``text``)."""
    if node_id in final:  # sent already; its text changed (left bare, past a size)
        final[node_id] = text
        return []
    made = []
    count = entry.get("attempts", 0)  # (root makes no attempt: it has none)
    for attempt in range(attempts.get(node_id, 0) + 1, count + 1):
        started = {"nodeId": node_id, "attempt": attempt}
        if attempt == 1:  # the entry's startedAt is its first attempt's
            started["startedAt"] = entry["startedAt"]
        made.append(("node.started", dumps(started)))
    attempts[node_id] = max(count, attempts.get(node_id, 0))
    if entry["status"] != "running":
        final[node_id] = text
        made.append(("node.finished", f'{{"nodeId":{dumps(node_id)},"state":{text}}}'))
    return made
