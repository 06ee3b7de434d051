"""Housekeeping of the API's idempotency records (the records themselves are written by radiology.api)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from radiology.models import IdempotencyRecord


def idempotency_purge_expired(*, now: dt.datetime | None = None) -> int:
    """Delete records past their time to live (for a periodic task); returns how many went."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
