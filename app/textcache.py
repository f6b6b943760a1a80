"""One cache for the parsers of short texts that come back in every run."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Texts up to this length are parsed once per process; longer ones each time, so a
# cache holds at most maxsize × this many characters.
CACHED_TEXT_CHARS = 1024


def cache_short_texts(maxsize: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Decorate a pure parser of one string: results for short texts are kept (LRU)."""
    def decorate(parse: Callable[[str], T]) -> Callable[[str], T]:
        cached = functools.lru_cache(maxsize=maxsize)(parse)

        @functools.wraps(parse)
        def parse_short_once(text: str) -> T:
            return cached(text) if len(text) <= CACHED_TEXT_CHARS else parse(text)
        return parse_short_once
    return decorate
