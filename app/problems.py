"""The problems of a request (SPEC §2, §6): their codes, ``Invalid``, which lists
each under its location, within a cap, and ``closest``, the name a misspelt one
may have meant."""
from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator

# Validation codes, in the order that picks the envelope's ``code`` (SPEC §2).
ROOT_NOT_MANUAL = 400229
INVALID_DEFINITION = 400228
INVALID_PAYLOAD = 400230
INVALID_RUN_ID = 400078
DUPLICATE_RUN_ID = 400079
CODE_PRECEDENCE = (ROOT_NOT_MANUAL, INVALID_DEFINITION, INVALID_PAYLOAD, INVALID_RUN_ID)
CODE_MESSAGES = {
    ROOT_NOT_MANUAL: "Root node must be of type 'manual'",
    INVALID_DEFINITION: "Invalid workflow definition",
    INVALID_PAYLOAD: "Invalid payload",
    INVALID_RUN_ID: "Malformed runId",
}

# A location or message quoting a hostile value is cut: an error body stays small.
MESSAGE_CHARS = 500
# Looking for the name a misspelt one meant (``closest``) costs up to milliseconds: one
# request looks that many times at most, however many misspellings it holds.
HINTS = 20
# Names longer than this are neither misspelt nor meant (node ids are at most 64).
HINT_NAME_CHARS = 64
TRUNCATED = "_truncated"  # the location of the note that problems were left out


class Invalid(Exception):
    """Every problem of a request: ``errors`` path → messages, ``codes`` path → code.

    At most ``limit`` problems are listed, a problem being one message (a location
    can hold several): a hostile definition can hold millions, and the answer must
    stay small. Past the limit one more entry, under ``_truncated``, says so; the
    problems left out still count for the envelope's ``code``.
    """

    def __init__(self, limit: int = 1000):
        super().__init__("invalid request")
        self.errors: dict[str, list[str]] = {}
        self.codes: dict[str, int] = {}
        self.limit, self.listed = limit, 0
        self.known_types_listed = False  # said once per answer, not a thousand times
        self.hints_left = HINTS
        self._left_out_codes: set[int] = set()

    @property
    def full(self) -> bool:
        return self.listed >= self.limit

    def may_hint(self) -> bool:
        """Whether one more look for the name a misspelt one meant is allowed (and
        counted): never once the answer is full, at most ``HINTS`` times."""
        if self.full or self.hints_left <= 0:
            return False
        self.hints_left -= 1
        return True

    def add(self, path: str, message: str, code: int = INVALID_DEFINITION) -> None:
        if self.full:
            self._left_out(code)
            return
        self.listed += 1
        if len(path) > MESSAGE_CHARS:
            path = path[:MESSAGE_CHARS - 1] + "…"
        if len(message) > MESSAGE_CHARS:
            message = message[:MESSAGE_CHARS - 1] + "…"
        self.errors.setdefault(path, []).append(message)
        self.codes.setdefault(path, code)

    def extend(self, pairs: Iterator[tuple[str, str]],
               code: int = INVALID_DEFINITION) -> None:
        """Add ``(location, message)`` pairs; stops reading them when full."""
        for path, message in pairs:
            if self.full:
                self._left_out(code)
                return
            self.add(path, message, code)

    def _left_out(self, code: int) -> None:
        self._left_out_codes.add(code)
        self.errors[TRUNCATED] = [f"More problems were found; only the first {self.limit} "
                                  "are listed."]

    @property
    def code(self) -> int:
        present = set(self.codes.values()) | self._left_out_codes
        return next(c for c in CODE_PRECEDENCE if c in present)


def closest(name: str, names: Collection[str]) -> str | None:
    """The name of ``names`` closest to ``name`` ignoring case, if one is close enough
    to be what was meant (difflib); none looked for among very many names, nor for or
    among very long ones (difflib is quadratic). Callers that may call it many times
    for one request ask ``Invalid.may_hint`` first."""
    if len(name) > HINT_NAME_CHARS or len(names) > 100:
        return None
    lowered: dict[str, str] = {}
    for known in names:
        if len(known) <= HINT_NAME_CHARS:
            lowered.setdefault(known.lower(), known)
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return lowered[found[0]] if found else None


def did_you_mean(name: str, names: Collection[str]) -> str:
    """`` Did you mean 'x'?`` when a name of ``names`` is close to ``name``, else ``""``."""
    meant = closest(name, names)
    return f" Did you mean {meant!r}?" if meant else ""
