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
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from .state import dumps
from .store import Store

POLL_S = 0.25  # how often the store is read while nothing new has come


def events(store: Store, run_id: str, token_id: int, wait: Callable[[float], bool],
           until: float) -> Iterator[list[tuple[str, str]]]:
    """The run's events in batches, a batch at least every ``POLL_S``, ending with
    ``run.finished``; or earlier when ``wait`` says the client has left, when the run
    is gone (pruned), or at ``until`` (monotonic) if the run is still in flight then —
    only a run whose worker died on another host lasts that long."""
    seen, attempts, finished = -1, {}, set()
    batch = [("run.started", dumps({"runId": run_id}))]
    while True:
        found = store.follow(run_id, token_id, seen)
        if found is None:
            return
        seen, text = found[0], found[1]
        if text is not None:
            body = json.loads(text)
            # (a run just started has no state stored yet: only its runId and status)
            for node_id, entry in body.get("executionState", {}).items():
                batch.extend(_node_events(node_id, entry, attempts, finished))
            if body["status"] != "running":
                batch.append(("run.finished", text))
                yield batch
                return
        yield batch
        batch = []
        if time.monotonic() >= until or not wait(POLL_S):
            return


def _node_events(node_id: str, entry: dict, attempts: dict[str, int],
                 finished: set[str]) -> list[tuple[str, str]]:
    """The events of one entry not yet sent: ``node.started`` per attempt begun, then
    ``node.finished`` once it is final."""
    if node_id in finished:
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
        finished.add(node_id)
        made.append(("node.finished", dumps({"nodeId": node_id, "state": entry})))
    return made
