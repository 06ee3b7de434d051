"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class ExpectedRefusalFilter(logging.Filter):
    """A 4xx answer (a refused role, a missing page) is expected: log its one line (method, path, status),
    never a traceback, which would bury the real errors a 500 leaves."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True


class RoutineTaskFilter(logging.Filter):
    """Drop Celery's own "sending / received / succeeded" INFO lines for the beat tasks that run more than
    once a minute (the sweep, DICOM housekeeping): they log a line of their own when they do something, and
    Celery's three lines every two seconds were most of `make run`'s output, burying what happened. A
    failure or a retry (WARNING and above) is always kept."""

    def __init__(self, tasks: Iterable[str] = ()) -> None:
        super().__init__()
        self.tasks = tuple(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not self.tasks:
            return True
        message = record.getMessage()
        return not any(task in message for task in self.tasks)
