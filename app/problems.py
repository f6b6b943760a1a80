"""The problems of a request (SPEC §2, §6): their codes, and ``Invalid``, which lists
each under its location, within a cap."""
from __future__ import annotations

from collections.abc import Iterator

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
        self._left_out_codes: set[int] = set()

    @property
    def full(self) -> bool:
        return self.listed >= self.limit

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
