"""A loop in flight (SPEC §11): its iterations, what each one sees, and its result.

The engine (app/engine.py) runs every node instance itself; this module keeps
the books of each running ``for-each`` instance: which iterations are running,
which may start next (``concurrency``, ``onItemError``), and what each saw and
produced. Nothing here touches a node's state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .plan import PlanNode

MAX_DEPTH = 10  # loops inside loops
MAX_INSTANCES = 10_000  # body-node instances in one run (B3OS's runtime budget)

# What an expression inside a body reads of its loops: the current iteration's item
# and index, the enclosing loop's, and any enclosing loop's by id ($for.<id>.item).
LOOP_VARIABLES = frozenset({"$item", "$index", "$parent_item", "$parent_index", "$for"})


@dataclass(eq=False)
class Frame:
    """One iteration of one loop instance: what ``$item``, ``$index`` and
    ``$for.<loop>`` read there, and the suffix of its instances' ids
    (``"[i]"``, nested ``"[i][j]"``)."""

    loop: str  # the for-each node's id
    index: int
    item: Any
    parent: Frame | None  # the iteration of the enclosing loop, if any
    suffix: str
    instances: list[str] = field(default_factory=list)  # ids, in the body's order
    remaining: int = 0  # instances not final yet
    chars: int = 0  # characters of JSON of its instances' results
    held: int = 0  # characters of JSON of its instances' inputs and results
    # Whether a failure here is its loop's to report, not the run's: this loop or one
    # around it goes on past a failed item (onItemError "continue").
    absorbs: bool = False

    def find(self, loop: str) -> Frame | None:
        """The iteration of ``loop`` that this one runs in (itself included)."""
        frame: Frame | None = self
        while frame is not None and frame.loop != loop:
            frame = frame.parent
        return frame


@dataclass(eq=False)
class Loop:
    """A running for-each instance."""

    instance: str  # its own instance id
    node: PlanNode
    frame: Frame | None  # where the loop itself runs
    items: list
    concurrency: int
    stop_on_error: bool
    max_chars: int  # the loop's result's cap: past it, no new iteration starts
    next: int = 0  # the next index to start
    running: int = 0
    statuses: list[str] = field(default_factory=list)  # per index
    results: list[dict | None] = field(default_factory=list)
    first_failure: tuple[int, str, str] | None = None  # (index, instance, message)
    chars: int = 0  # characters of JSON of the results of the iterations that ended

    def __post_init__(self) -> None:
        self.statuses = ["skipped"] * len(self.items)
        self.results = [None] * len(self.items)

    @property
    def stopped(self) -> bool:
        return self.stop_on_error and self.first_failure is not None

    def may_start(self) -> bool:
        """Whether another iteration starts now."""
        return (not self.stopped and self.next < len(self.items)
                and self.running < self.concurrency and self.chars <= self.max_chars)

    @property
    def done(self) -> bool:
        return self.running == 0 and (self.stopped or self.next >= len(self.items)
                                      or self.chars > self.max_chars)

    def frame_for(self, index: int) -> Frame:
        parent_suffix = self.frame.suffix if self.frame else ""
        absorbs = not self.stop_on_error or (self.frame is not None and self.frame.absorbs)
        return Frame(self.node.id, index, self.items[index], self.frame,
                     f"{parent_suffix}[{index}]", absorbs=absorbs)

    def finished(self, frame: Frame, failure: tuple[str, str] | None,
                 results: dict[str, Any]) -> None:
        """Iteration ``frame`` ended: ``failure`` is ``(instance, message)`` of its first
        failed instance, if one failed."""
        self.running -= 1
        self.chars += frame.chars
        self.statuses[frame.index] = "failure" if failure else "success"
        if self.chars > self.max_chars:  # no result can hold them: keep none (memory)
            self.results = [None] * len(self.items)
        else:
            self.results[frame.index] = results
        if failure and (self.first_failure is None or frame.index < self.first_failure[0]):
            self.first_failure = (frame.index, *failure)

    def result(self) -> dict:
        """The loop's result (SPEC §11)."""
        return {
            "iterations": [{"index": i, "status": status,
                            "results": self.results[i] or dict.fromkeys(self.node.body)}
                           for i, status in enumerate(self.statuses)],
            "iterationCount": len(self.items),
            "lastAdvancedIteration": self.next - 1,
            "status": "stopped" if self.stopped else "completed",
        }
