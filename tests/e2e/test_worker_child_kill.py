"""A pool child of the real worker (the shipped model loaded) killed while idle: classification goes on.

On the embedded default (SQLite + the file broker; `make test-e2e-embedded`) stock Celery froze for good
here (worker/prefork.py has the cause); on PostgreSQL + Redis (`make test-e2e-services`) Celery's
asynchronous pool recovered already. Both must keep classifying.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from radiology.models import Prediction, Radiograph
from tests.e2e.harness import WorkerProcess, upload_distinct_study, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _pool_children(worker: WorkerProcess) -> list[int]:
    """Live pool children, from every thread of the main process (replacements come from a thread)."""
    pids = []
    for task in Path(f"/proc/{worker.pid}/task").glob("*"):
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _predicted(ids: list[int]) -> bool:
    return Radiograph.objects.filter(pk__in=ids, status=Radiograph.Status.PREDICTED).count() == len(ids)


def test_an_idle_pool_child_killed_does_not_stop_classification(celery_worker: WorkerProcess) -> None:
    first = upload_distinct_study("KILL-IDLE-1", 1)
    wait_for(lambda: _predicted(first), timeout=240, message="the first prediction")
    [child] = wait_for(lambda: _pool_children(celery_worker), timeout=30, message="the pool child")

    os.kill(child, signal.SIGKILL)  # idle: the first radiograph is done, nothing else is queued
    wait_for(
        lambda: [pid for pid in _pool_children(celery_worker) if pid != child],
        timeout=60,
        message="a replacement pool child",
    )
    after = upload_distinct_study("KILL-IDLE-2", 3)
    wait_for(lambda: _predicted(after), timeout=240, message="predictions after the kill")
    assert celery_worker.process.poll() is None
    for pk in first + after:
        assert Prediction.objects.filter(radiograph_id=pk).count() == 1
