"""The product's roles, as Django groups: clinicians upload and review, admins also audit."""

from __future__ import annotations

from typing import Any

CLINICIAN_GROUP = "clinician"
ADMIN_GROUP = "admin"


def _group_names(user: Any) -> set[str]:
    if not getattr(user, "is_authenticated", False):
        return set()
    cached = getattr(user, "_fracture_review_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._fracture_review_groups = cached
    return cached


def is_admin(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and (
        bool(user.is_superuser) or ADMIN_GROUP in _group_names(user)
    )


def is_clinician(user: Any) -> bool:
    """Clinical access: clinicians, and admins (who can do everything a clinician can)."""
    return is_admin(user) or CLINICIAN_GROUP in _group_names(user)


def ensure_role_groups() -> None:
    """The groups exist after migrating; this restores them where a test database was flushed."""
    # Imported here: admin_site imports this module while the app registry is loading (no models yet).
    from django.contrib.auth.models import Group

    for name in (CLINICIAN_GROUP, ADMIN_GROUP):
        Group.objects.get_or_create(name=name)
