"""Two rebuilds of the monitoring summary at once (the nightly one and an admin's "Rebuild now") on real
PostgreSQL: the second waits for the first, so the summary holds one rebuild's cells, never both."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from radiology.governance.models import MonitoringBuild, MonitoringCell
from radiology.governance.monitoring import monitoring_refresh
from radiology.governance.registry import model_version_register
from tests.governance.test_registry import _reviewed_cases

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_rebuild_waits_for_the_one_in_progress_and_the_summary_is_counted_once(
    tiny_model_dir: Path, shadow_model_dir: Path
) -> None:
    assert connection.vendor == "postgresql", "the end-to-end stage runs on PostgreSQL"
    model_version_register(path=tiny_model_dir, status="active")
    model_version_register(path=shadow_model_dir, status="shadow")
    _reviewed_cases(10, active_good=True, shadow_good=True)
    cells = monitoring_refresh()
    predictions = MonitoringBuild.objects.get().predictions
    assert cells > 0 and predictions == 20

    in_progress, release = threading.Event(), threading.Event()

    def first_rebuild_in_progress() -> None:  # a whole rebuild, its commit held back as a long one's would be
        try:
            with transaction.atomic():
                monitoring_refresh()
                in_progress.set()
                release.wait(30)
        finally:
            connections.close_all()

    finished: list[int] = []

    def second_rebuild() -> None:
        try:
            finished.append(monitoring_refresh())
        finally:
            connections.close_all()

    holder = threading.Thread(target=first_rebuild_in_progress)
    holder.start()
    assert in_progress.wait(10)
    second = threading.Thread(target=second_rebuild)
    second.start()
    time.sleep(1.5)
    assert not finished, "the second rebuild did not wait for the one in progress"
    assert MonitoringCell.objects.count() == cells  # readers still see the last summary meanwhile
    release.set()
    holder.join(10)
    second.join(30)
    assert finished == [cells]
    assert MonitoringCell.objects.count() == cells  # one rebuild's cells, not two
    assert MonitoringBuild.objects.count() == 3  # the first, the one held back, the one that waited
