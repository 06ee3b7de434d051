"""The audit trail is append-only through the API too: no endpoint changes or deletes an audit event,
whatever the method, the path or the caller's role (the ORM and admin are covered in their own tests)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from radiology.models import AuditEvent
from tests.factories import AuditEventFactory

pytestmark = pytest.mark.django_db


def _api_paths(resolver: URLResolver | None = None, prefix: str = "") -> list[str]:
    """Every /api/ route in the URL conf, with sample values for its parameters."""
    resolver = resolver or get_resolver()
    paths: list[str] = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            paths += _api_paths(pattern, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/"):
            sample = (
                route.replace("<int:pk>", "1")
                .replace("<uuid:pk>", str(uuid.uuid4()))
                .replace("<str:code>", "x")
            )
            paths.append("/" + sample.lstrip("^").rstrip("$"))
    return paths


def test_the_walk_finds_the_api() -> None:
    paths = _api_paths()
    assert "/api/v1/studies" in paths and "/api/v1/radiographs/1/reviews" in paths


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_no_api_call_changes_or_deletes_an_audit_event(admin: Any, method: str) -> None:
    events = [AuditEventFactory.create(details={"n": n}) for n in range(3)]
    snapshot = list(AuditEvent.objects.filter(pk__in=[e.pk for e in events]).values())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    targets = [
        *_api_paths(),
        f"/api/v1/audit-events/{events[0].pk}",
        f"/api/v1/audit/{events[0].pk}",
        "/api/v1/audit-events",
    ]
    for path in targets:
        response = getattr(client, method)(path, {"action": "export", "details": {}}, format="json")
        assert response.status_code in {400, 403, 404, 405, 422}, (
            f"{method.upper()} {path}: {response.status_code}"
        )
    assert list(AuditEvent.objects.filter(pk__in=[e.pk for e in events]).values()) == snapshot
