"""API test fixtures: token-authenticated clients for the fixed cast, images, and predicted radiographs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from radiology.models import AuditEvent, Radiograph
from tests.conftest import fixture_bytes
from tests.factories import PredictionFactory, RadiographFactory

PROBLEM = "application/problem+json"
ROLES = ("anonymous", "outsider", "clinician", "admin")


@pytest.fixture(autouse=True)
def _fresh_throttle_history() -> None:
    """Throttles count in the cache; a previous test's requests must not count against this one."""
    cache.clear()


def token_client(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api_for(clinician: Any, admin: Any, outsider: Any) -> Callable[[str], APIClient]:
    users = {"anonymous": None, "outsider": outsider, "clinician": clinician, "admin": admin}
    return lambda role: token_client(users[role])


@pytest.fixture
def clinician_api(clinician: Any) -> APIClient:
    return token_client(clinician)


@pytest.fixture
def admin_api(admin: Any) -> APIClient:
    return token_client(admin)


def png_bytes(value: int = 90, size: int = 64) -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((size, size), value, np.uint8))
    assert ok
    return encoded.tobytes()


def upload(name: str, content: bytes | None = None, content_type: str = "application/octet-stream") -> Any:
    """A multipart file part; by default the named fixture image."""
    data = content if content is not None else fixture_bytes(f"images/{name}")
    return SimpleUploadedFile(name, data, content_type=content_type)


def study_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "mrn": "MRN-100",
        "patient_name": "Ada Lovelace",
        "accession_number": "ACC-100",
        "body_region": "wrist",
    }
    form.update(overrides)
    return form


def manifest_part(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest)


def predicted_radiograph(**prediction: Any) -> Radiograph:
    """A radiograph with a stored prediction (factories bypass services: state is arranged directly)."""
    return PredictionFactory.create(**prediction).radiograph


def queued_radiograph(**kwargs: Any) -> Radiograph:
    return RadiographFactory.create(**kwargs)


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"/api/problems/{code}"
    assert body["title"] and body["detail"]
    assert "Traceback" not in json.dumps(body)
    return body


def denials() -> int:
    return AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED).count()
