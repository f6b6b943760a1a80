"""A node's failure as a value (SPEC §3's node errors): raised by handlers and by the
outbound HTTP client they use, kept by the engine as ``{code, message, retryable}``."""
from __future__ import annotations


class NodeError(Exception):
    """A node's failure as a value: ``{code, message, retryable}``."""

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}
