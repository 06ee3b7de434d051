"""Writing the append-only audit trail."""

from __future__ import annotations

from typing import Any

from radiology.models import AuditEvent


def audit_record(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    event = audit_event(action=action, actor=actor, target=target, details=details, client_ip=client_ip)
    event.save()
    return event


def audit_event(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    """An unsaved audit event (audit_record saves one; batch services bulk_create several)."""
    is_person = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent(
        actor=actor if is_person else None,
        actor_name=actor.get_username() if is_person else "",
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        details=details or {},
        client_ip=client_ip,
    )
