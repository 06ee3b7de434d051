"""Reads of the hospital integration's records."""

from __future__ import annotations

from django.db.models import QuerySet

from radiology.dicomnet.models import ResultDelivery
from radiology.models import Study


def study_result_deliveries(*, study: Study) -> QuerySet[ResultDelivery]:
    """A study's deliveries to the PACS, newest first."""
    return ResultDelivery.objects.filter(study=study).order_by("-created_at", "-pk")
