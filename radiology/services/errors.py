"""The one error type services raise for a request they refuse."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses. `code` is stable (API clients match on it); `message` is for people."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
