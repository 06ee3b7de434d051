"""Audit events for authentication failures (successful logins are in the web server's access log), the
sign-in back-off's counters, and the database cache's table."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.management import call_command
from django.db.models.signals import post_migrate
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


@receiver(post_migrate)
def create_cache_table(sender: AppConfig, using: str = "default", **_: Any) -> None:
    """The shared cache lives in the database when no CACHE_URL is set (config/settings.py): its table is
    made with the others, by every `migrate` (a no-op for a Redis cache or an existing table)."""
    if sender.name == "radiology":
        call_command("createcachetable", database=using, verbosity=0)
