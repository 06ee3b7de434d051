"""Audit events for authentication failures (successful logins are in the web server's access log)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from radiology.access import client_ip
from radiology.login_throttle import login_failure_record, login_success_record
from radiology.models import AuditEvent
from radiology.services import audit_record


@receiver(user_login_failed)
def audit_failed_login(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any
) -> None:
    audit_record(
        action=AuditEvent.Action.LOGIN_FAILED,
        details={"username": str(credentials.get("username", ""))[:150]},
        client_ip=client_ip(request) if request is not None else None,
    )
    login_failure_record(username=str(credentials.get("username", "")))


@receiver(user_logged_in)
def clear_login_backoff(sender: Any, user: Any, **_: Any) -> None:
    login_success_record(username=user.get_username())
