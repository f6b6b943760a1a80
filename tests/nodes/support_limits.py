"""Helpers for the cancellation tests of node handlers: counted checks, counted reads,
and the CPU time of the engine's pool threads."""
from __future__ import annotations

import os
import threading
import time
from types import ModuleType
from typing import ClassVar

import pytest

from app.nodes.base import NodeContext, NodeError
from tests.helpers import definition, run_engine


def counting_ctx(allowed: int = 3) -> NodeContext:
    """A context whose ``check`` counts its calls and raises ``TIMEOUT`` after ``allowed``:
    an attempt whose deadline comes after a few checks, without reading the clock."""
    context = NodeContext(run_id="run_unit", node_id="n", deadline=time.monotonic() + 60)
    context.checks = 0

    def check() -> None:
        context.checks += 1
        if context.checks > allowed:
            raise NodeError("TIMEOUT", "The attempt exceeded its time limit.", retryable=True)
    context.check = check
    return context


class Counted(dict):
    """An item that counts how often it is read (``reads`` shared by a whole array)."""

    reads: ClassVar[list[int]] = [0]

    def get(self, *args):
        self.reads[0] += 1
        return super().get(*args)

    def __getitem__(self, key):
        self.reads[0] += 1
        return super().__getitem__(key)


def counted_items(count: int, **fields) -> tuple[list[Counted], list[int]]:
    """``count`` items ``{"i": n, **fields}`` and the counter of their reads."""
    reads = [0]
    kind = type("CountedItem", (Counted,), {"reads": reads})
    return [kind(i=n, **fields) for n in range(count)], reads


def times_out(module: ModuleType, data: dict, allowed: int = 3) -> NodeContext:
    """Run the handler with ``counting_ctx``: it must stop with ``TIMEOUT``."""
    context = counting_ctx(allowed)
    with pytest.raises(NodeError) as caught:
        module.run(data, context)
    assert caught.value.code == "TIMEOUT", caught.value.message
    assert context.checks == allowed + 1
    return context


def node_threads_cpu() -> dict[int, float]:
    """CPU seconds used so far by each of the engine's pool threads (named "node"),
    by native thread id, from /proc."""
    seconds = {}
    for thread in threading.enumerate():
        if thread.name != "node" or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        seconds[thread.native_id] = ticks / os.sysconf("SC_CLK_TCK")
    return seconds


def assert_no_cpu_after(node: dict, payload: dict | None = None, code: str = "TIMEOUT") -> dict:
    """Run ``node`` (given ``timeoutMs: 200``) through the engine; it must fail with
    ``code``, and 300 ms after the answer no pool thread may still be working."""
    if not os.path.exists("/proc/self/task"):
        pytest.skip("needs Linux's /proc")
    body = {"definition": definition("root>n", n={**node, "timeoutMs": 200})}
    if payload is not None:
        body["payload"] = payload
    out = run_engine(body)
    state = out["executionState"]["n"]
    assert (state["status"], (state.get("error") or {}).get("code")) == ("failure", code)
    time.sleep(0.3)
    before = node_threads_cpu()
    time.sleep(0.5)
    burnt = sum(used - before.get(tid, 0.0) for tid, used in node_threads_cpu().items())
    assert burnt < 0.05, f"pool threads used {burnt:.2f} s of CPU after the answer"
    return out
