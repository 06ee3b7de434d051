"""The reconciling sweep: what a process killed at the wrong moment leaves behind, removed.

A web process killed in the middle of an upload leaves files it had written (the transaction that would
have recorded them never commits, and the clean-up that deletes them on an error never runs) and its
Idempotency-Key record "in progress" for good. Both are found here by what they lack: a file that no row
points at, older than a grace period longer than any request may take, is deleted; an in-progress record
untouched for API_IDEMPOTENCY_STALE_SECONDS is dropped (the client's retry then runs afresh).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Model
from django.utils import timezone

from radiology.models import IdempotencyRecord, Prediction, Radiograph

logger = logging.getLogger(__name__)

# The folders the application writes (radiology/models.py: *_storage_name) and the field pointing there.
STORED_FILES: tuple[tuple[str, type[Model], str], ...] = (
    ("radiographs", Radiograph, "image"),
    ("heatmaps", Prediction, "heatmap"),
)
_CHUNK = 500


@dataclass(frozen=True)
class ReconcileResult:
    orphan_files_removed: int
    idempotency_records_expired: int


def storage_reconcile(*, now: dt.datetime | None = None) -> ReconcileResult:
    now = now or timezone.now()
    removed = sum(_remove_orphans(folder, model, field, now) for folder, model, field in STORED_FILES)
    expired = idempotency_expire_stale(now=now)
    if removed or expired:
        logger.info("reconcile: removed %d orphan file(s), expired %d idempotency key(s)", removed, expired)
    return ReconcileResult(orphan_files_removed=removed, idempotency_records_expired=expired)


def _remove_orphans(folder: str, model: type[Model], field: str, now: dt.datetime) -> int:
    if not default_storage.exists(folder):
        return 0
    cutoff = now - dt.timedelta(seconds=settings.RECONCILE_ORPHAN_GRACE_SECONDS)
    names = [f"{folder}/{name}" for name in default_storage.listdir(folder)[1]]
    removed = 0
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        referenced = set(
            model._default_manager.filter(**{f"{field}__in": chunk}).values_list(field, flat=True)
        )
        for name in chunk:
            if name in referenced:
                continue
            try:
                if default_storage.get_modified_time(name) >= cutoff:
                    continue  # may belong to a request still running: its row is not committed yet
                default_storage.delete(name)
            except FileNotFoundError:
                continue  # removed meanwhile
            removed += 1
    return removed


def idempotency_expire_stale(*, now: dt.datetime | None = None) -> int:
    """Drop in-progress records whose request died with its process; returns how many went."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.API_IDEMPOTENCY_STALE_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(
        state=IdempotencyRecord.State.IN_PROGRESS, updated_at__lt=cutoff
    ).delete()
    return deleted
