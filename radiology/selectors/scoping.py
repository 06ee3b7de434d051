"""Who may read what: clinical data is visible to clinicians and admins only, the audit to admins."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from radiology.roles import is_admin, is_clinician


def require_clinical(user: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
    return queryset if is_clinician(user) else queryset.none()


def require_admin(user: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
    return queryset if is_admin(user) else queryset.none()
