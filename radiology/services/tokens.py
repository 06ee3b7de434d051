"""API tokens."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework.authtoken.models import Token

from radiology.models import AuditEvent
from radiology.services.audit import audit_record


def api_token_issue(*, user: Any, rotate: bool = False, actor: Any = None) -> tuple[str, bool]:
    """The user's API token, created on first request (or replaced when rotating); returns (key, created).

    The key itself is never written to the audit trail or the log.
    """
    with transaction.atomic():
        if rotate:
            Token.objects.filter(user=user).delete()
        token, created = Token.objects.get_or_create(user=user)
        if created:
            audit_record(
                action=AuditEvent.Action.TOKEN_CREATED,
                actor=actor,
                target=user,
                details={"user": user.get_username(), "rotated": rotate},
            )
    return token.key, created
