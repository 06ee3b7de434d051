"""Patient images are never kept in a cache: a shared workstation's browser cache outlives the session."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from classifier.explain import heatmap_to_stored_png
from tests.api.conftest import token_client
from tests.factories import PredictionFactory, RadiographFactory

pytestmark = pytest.mark.django_db


def _assert_not_cached(response: Any) -> None:
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "max-age" not in response["Cache-Control"]


def test_radiographs_and_heatmaps_are_sent_with_no_store(clinician: Any, clinician_client: Client) -> None:
    png = cv2.imencode(".png", np.full((32, 48), 90, np.uint8))[1].tobytes()
    radiograph = RadiographFactory.create(image=ContentFile(png, name="r.png"), width=48, height=32)
    prediction = PredictionFactory.create(radiograph=radiograph)
    prediction.heatmap.save("h.png", ContentFile(heatmap_to_stored_png(np.eye(8, dtype=np.float32))))

    _assert_not_cached(clinician_client.get(reverse("radiology:radiograph_image", args=[radiograph.pk])))
    _assert_not_cached(clinician_client.get(reverse("radiology:heatmap_image", args=[prediction.pk])))
    _assert_not_cached(token_client(clinician).get(f"/api/v1/radiographs/{radiograph.pk}/image"))
