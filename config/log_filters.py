"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging


class ExpectedRefusalFilter(logging.Filter):
    """A 4xx answer (a refused role, a missing page) is expected: log its one line (method, path, status),
    never a traceback, which would bury the real errors a 500 leaves."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True
