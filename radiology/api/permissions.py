"""The web UI's roles, for the API: clinicians (and admins) work with clinical data, admins also export."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from radiology.roles import is_admin, is_clinician


class IsClinician(BasePermission):
    message = "Your account has no clinical role; ask an administrator to add you to the clinician group."
    code = "permission_denied"

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_clinician(request.user)


class IsAdmin(BasePermission):
    message = "Only administrators may do this."
    code = "permission_denied"

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_admin(request.user)
