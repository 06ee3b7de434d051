"""The log keeps what happened: Celery's per-run lines for the beat tasks that run every few seconds are
dropped (they were most of `make run`'s output), every other task's lines and any failure stay."""

from __future__ import annotations

import logging

from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_RETRY, LOG_SUCCESS
from django.conf import settings

from config.log_filters import RoutineTaskFilter

HOUSEKEEPING = "worker.dicom_tasks.dicom_housekeeping"
CLASSIFY = "worker.tasks.classify_radiograph"


def _record(logger: str, level: int, msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, args, None)  # type: ignore[arg-type]


def _routine_filter() -> RoutineTaskFilter:
    config = dict(settings.LOGGING["filters"]["routine_tasks"])
    assert config.pop("()") == "config.log_filters.RoutineTaskFilter"
    return RoutineTaskFilter(**config)


def test_the_frequent_beat_tasks_are_the_routine_ones_and_every_celery_logger_carries_the_filter() -> None:
    assert _routine_filter().tasks == (HOUSEKEEPING, "worker.tasks.sweep_stale_radiographs")
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        assert settings.LOGGING["loggers"][name]["filters"] == ["routine_tasks"]


def test_routine_runs_are_dropped_and_other_tasks_and_every_failure_kept() -> None:
    keep = _routine_filter().filter
    context = {"name": HOUSEKEEPING, "id": "4f1c", "runtime": 0.003, "return_value": {"filed": 0}}
    # Celery's own three lines of a routine run, as beat, the worker's strategy and the tracer write them.
    assert not keep(
        _record(
            "celery.beat",
            logging.INFO,
            "Scheduler: Sending due task %s (%s)",
            ("dicom-housekeeping", HOUSEKEEPING),
        )
    )
    assert not keep(_record("celery.worker.strategy", logging.INFO, LOG_RECEIVED, context))
    assert not keep(_record("celery.app.trace", logging.INFO, LOG_SUCCESS, context))
    # A routine task that fails or retries is news.
    assert keep(
        _record(
            "celery.app.trace",
            logging.ERROR,
            LOG_FAILURE,
            {**context, "description": "raised unexpected", "exc": "boom"},
        )
    )
    assert keep(_record("celery.app.trace", logging.WARNING, LOG_RETRY, {**context, "exc": "later"}))
    # Any other task keeps its lines.
    assert keep(_record("celery.app.trace", logging.INFO, LOG_SUCCESS, {**context, "name": CLASSIFY}))
    assert keep(_record("celery.worker.strategy", logging.INFO, LOG_RECEIVED, {**context, "name": CLASSIFY}))


def test_without_routine_tasks_nothing_is_dropped() -> None:
    record = _record(
        "celery.app.trace",
        logging.INFO,
        LOG_SUCCESS,
        {"name": HOUSEKEEPING, "id": "1", "runtime": 0, "return_value": None},
    )
    assert RoutineTaskFilter().filter(record)
