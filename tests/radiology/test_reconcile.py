"""The reconciling sweep removes what a killed web process leaves: files without rows, stuck idempotency keys."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from radiology import services
from radiology.models import IdempotencyRecord
from tests.factories import PredictionFactory, RadiographFactory

pytestmark = pytest.mark.django_db


def _age(name: str, seconds: float) -> None:
    path = Path(default_storage.path(name))
    old = time.time() - seconds
    os.utime(path, (old, old))


def _orphan(name: str, age_seconds: float) -> str:
    saved = default_storage.save(name, ContentFile(b"left by a killed upload"))
    _age(saved, age_seconds)
    return saved


def test_old_files_without_rows_are_removed_and_nothing_else(settings: Any) -> None:
    settings.RECONCILE_ORPHAN_GRACE_SECONDS = 3600
    radiograph = RadiographFactory.create(image=ContentFile(b"kept", name="r.png"))
    prediction = PredictionFactory.create(radiograph=radiograph)
    prediction.heatmap.save("h.png", ContentFile(b"kept too"))
    image, heatmap = radiograph.image.name, prediction.heatmap.name
    assert image is not None and heatmap is not None
    _age(image, 7200)  # old, but a row points at it
    _age(heatmap, 7200)
    old_dcm = _orphan("radiographs/0123456789abcdef.dcm", 7200)
    old_heatmap = _orphan("heatmaps/fedcba9876543210.png", 7200)
    young = _orphan("radiographs/aaaaaaaaaaaaaaaa.dcm", 60)  # an upload may still be committing it

    result = services.storage_reconcile()

    assert result.orphan_files_removed == 2
    assert not default_storage.exists(old_dcm) and not default_storage.exists(old_heatmap)
    assert default_storage.exists(young)
    assert default_storage.exists(image) and default_storage.exists(heatmap)


def test_stuck_in_progress_idempotency_records_are_expired(settings: Any, clinician: Any) -> None:
    settings.API_IDEMPOTENCY_STALE_SECONDS = 300
    stuck = IdempotencyRecord.objects.create(user=clinician, key="killed-mid-upload", fingerprint="f")
    IdempotencyRecord.objects.create(user=clinician, key="still-running", fingerprint="f")
    done = IdempotencyRecord.objects.create(
        user=clinician, key="done", fingerprint="f", state=IdempotencyRecord.State.COMPLETED
    )
    long_ago = timezone.now() - dt.timedelta(hours=1)
    IdempotencyRecord.objects.filter(pk__in=[stuck.pk, done.pk]).update(updated_at=long_ago)

    assert services.storage_reconcile().idempotency_records_expired == 1
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {"still-running", "done"}


def test_the_sweep_command_reconciles_on_request(settings: Any) -> None:
    settings.RECONCILE_ORPHAN_GRACE_SECONDS = 300
    orphan = _orphan("radiographs/bbbbbbbbbbbbbbbb.png", 3600)
    call_command("sweep")
    assert default_storage.exists(orphan)
    call_command("sweep", "--reconcile")
    assert not default_storage.exists(orphan)


def test_the_reconcile_task_is_scheduled(settings: Any) -> None:
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "worker.tasks.reconcile_storage" in tasks
