"""Paying for work in loops: how handlers and walks stop at their deadline (SPEC §3).

A loop over data whose size a request controls calls a ``Tick`` for its units
of work; every ``CHECK_EVERY`` units the tick calls the attempt's ``check``
(``NodeContext.check``, or the engine's deadline check), which raises to stop
the work. About a thousand cheap steps is well under a millisecond.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
Tick = Callable[..., None]  # tick(units=1): pays for units of work; may raise

CHECK_EVERY = 1000


def ticks(check: Callable[[], None]) -> Tick:
    """A ``Tick`` that calls ``check`` once per ~``CHECK_EVERY`` units."""
    left = CHECK_EVERY

    def tick(units: int = 1) -> None:
        nonlocal left
        left -= units
        if left <= 0:
            left = CHECK_EVERY
            check()
    return tick


def idle(units: int = 1) -> None:
    """The ``Tick`` of callers without a deadline."""


def every(items: Iterable[T], check: Callable[[], None]) -> Iterator[T]:
    """``items``, calling ``check`` before the first and then every ``CHECK_EVERY``."""
    for count, item in enumerate(items):
        if count % CHECK_EVERY == 0:
            check()
        yield item
