"""API batches and their progress."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from radiology.models import Batch, BatchItem, Radiograph
from radiology.roles import is_admin
from radiology.selectors.radiographs import radiographs_with_results
from radiology.selectors.scoping import require_clinical


def batch_get(*, user: Any, pk: Any) -> Any:
    """A batch with its items, studies and their radiographs' results. Visible to whoever submitted it
    and to admins; raises Batch.DoesNotExist otherwise."""
    items = BatchItem.objects.select_related("study").prefetch_related(
        Prefetch("study__radiographs", queryset=radiographs_with_results().order_by("position", "pk"))
    )
    batches = Batch.objects.prefetch_related(Prefetch("items", queryset=items.order_by("index")))
    if not is_admin(user):
        batches = batches.filter(submitted_by=user)
    return require_clinical(user, batches).get(pk=pk)


def batch_progress(*, batch: Any) -> dict[str, int]:
    """How many of the batch's radiographs are in each classification status (from batch_get's prefetch)."""
    counts = dict.fromkeys(Radiograph.Status.values, 0)
    for item in batch.items.all():
        if item.study is not None:
            for radiograph in item.study.radiographs.all():
                counts[radiograph.status] += 1
    return counts
