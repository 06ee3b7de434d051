"""API tokens: created per user by a management command (or in the admin), never logged."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from radiology.models import AuditEvent

pytestmark = pytest.mark.django_db


def _token(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_it_prints_the_same_token_until_rotated(clinician: Any) -> None:
    first, _ = _token("dr.ada")
    again, _ = _token("dr.ada")
    rotated, _ = _token("dr.ada", "--rotate")
    assert first == again != rotated
    assert Token.objects.get(user=clinician).key == rotated
    events = AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_CREATED)
    assert events.count() == 2
    assert all(first not in str(e.details) and rotated not in str(e.details) for e in events)


def test_the_token_authenticates_and_the_rotated_one_does_not(clinician: Any) -> None:
    old, _ = _token("dr.ada")
    new, _ = _token("dr.ada", "--rotate")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.get("/api/v1/studies").status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert client.get("/api/v1/studies").status_code == 401


def test_a_user_without_role_gets_a_warning(outsider: Any) -> None:
    key, err = _token("no.role")
    assert len(key) == 40 and "no clinician or admin role" in err


def test_unknown_or_inactive_users_are_refused(clinician: Any) -> None:
    with pytest.raises(CommandError, match="No user"):
        _token("nobody")
    clinician.is_active = False
    clinician.save()
    with pytest.raises(CommandError, match="inactive"):
        _token("dr.ada")
    assert Token.objects.count() == 0


def test_admins_can_create_tokens_in_the_admin(admin_client_: Any, clinician: Any) -> None:
    assert admin_client_.get("/admin/authtoken/tokenproxy/add/").status_code == 200
    response = admin_client_.post("/admin/authtoken/tokenproxy/add/", {"user": clinician.pk})
    assert response.status_code == 302
    assert Token.objects.filter(user=clinician).exists()
