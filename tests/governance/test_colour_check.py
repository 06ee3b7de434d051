"""The colour check in front of the model: radiographs are grey, so an image with a large share of clearly
coloured pixels (a photograph, a screenshot) is not analysed, by the active and by a shadow version. The
shipped model's threshold and the real photo: tests/governance/test_ood_real_model.py."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile

from classifier.card import colour_share
from radiology.governance.guardrails import check_colour
from radiology.governance.models import GuardrailRefusal, ShadowPrediction
from radiology.models import Prediction, Radiograph
from tests.conftest import FakePredictor
from tests.factories import RadiographFactory
from worker import governance_tasks, tasks

COLOUR = {"threshold": 0.1}


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _grey_rgb(height: int = 200, width: int = 300) -> np.ndarray:
    ramp = np.linspace(20, 230, width, dtype=np.uint8)
    return np.repeat(np.tile(ramp, (height, 1))[..., None], 3, axis=2)


def _photo() -> np.ndarray:
    rgb = _grey_rgb()
    rgb[:100] = (40, 90, 200)  # sky
    rgb[150:] = (30, 140, 40)  # grass
    return rgb


def test_a_grey_image_in_rgb_has_no_coloured_pixels() -> None:
    assert colour_share(_jpeg(_grey_rgb())) == pytest.approx(0.0, abs=0.002)


def test_a_coloured_marker_on_a_radiograph_stays_under_the_threshold() -> None:
    rgb = _grey_rgb()
    rgb[10:30, 10:40] = (220, 30, 30)  # a red side marker: 1 % of the image
    share = colour_share(_jpeg(rgb))
    assert 0.005 < share < 0.02
    assert check_colour(share, COLOUR) is None


def test_a_photograph_is_refused_with_a_readable_reason() -> None:
    share = colour_share(_jpeg(_photo()))
    assert share > 0.6
    refusal = check_colour(share, COLOUR)
    assert refusal is not None and refusal.code == "out_of_distribution"
    assert "colour picture" in refusal.reason and "Read it without the model" in refusal.reason
    assert refusal.details == {"check": "colour", "coloured_share": round(share, 4), "threshold": 0.1}


def test_grey_files_and_what_is_not_an_image_count_as_grey() -> None:
    grey_png = cv2.imencode(".png", np.full((50, 50), 128, np.uint8))[1].tobytes()
    assert colour_share(grey_png) == 0.0
    assert colour_share(b"not an image at all") == 0.0
    assert colour_share(b"\x00" * 128 + b"DICM" + b"\x00" * 64) == 0.0


class ColourCarded(FakePredictor):
    card: dict[str, Any] = {"ood": {"colour": COLOUR}}


class ShadowColourCarded(ColourCarded):
    version = "tiny-shadow"


@pytest.mark.django_db
def test_the_worker_does_not_analyse_a_colour_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks.reset_predictor_for_tests()
    predictor = ColourCarded()
    monkeypatch.setattr("worker.tasks.get_predictor", lambda: predictor)
    photo = RadiographFactory.create(image=ContentFile(_jpeg(_photo()), name="p.jpg"), width=300, height=200)
    grey = RadiographFactory.create(
        image=ContentFile(_jpeg(_grey_rgb()), name="g.jpg"), width=300, height=200
    )
    for radiograph in (photo, grey):
        tasks.classify_radiograph.apply(args=[radiograph.pk])
        radiograph.refresh_from_db()
    assert photo.status == Radiograph.Status.NOT_ANALYSED and grey.status == Radiograph.Status.PREDICTED
    refusal = GuardrailRefusal.objects.get(radiograph=photo)
    assert refusal.details["check"] == "colour" and "colour picture" in refusal.reason
    assert not Prediction.objects.filter(radiograph=photo).exists()


@pytest.mark.django_db
def test_a_shadow_version_does_not_analyse_a_colour_picture() -> None:
    photo = RadiographFactory.create(image=ContentFile(_jpeg(_photo()), name="p.jpg"), width=300, height=200)
    assert governance_tasks.shadow_predict_batch("tiny-shadow", ShadowColourCarded(), [photo.pk]) == 0
    assert not ShadowPrediction.objects.exists()
    refusal = GuardrailRefusal.objects.get(radiograph=photo, model_version="tiny-shadow")
    assert refusal.details["check"] == "colour"
