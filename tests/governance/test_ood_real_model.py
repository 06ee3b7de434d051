"""The out-of-distribution guardrail with the shipped model and its card: through the worker, a scanned
document is not analysed and a radiograph is; the card's distance (Mahalanobis in 64 principal components of
the training embeddings) flags a chest CT slice too. A photo still passes under it (15.1 against 17.1): that
gap is stated in docs/governance.md and the model report, and pinned here so a change shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile

from classifier.card import ood_distances
from classifier.preprocessing import decode_grayscale
from radiology.governance.guardrails import ood_reference
from radiology.governance.models import GuardrailRefusal
from radiology.models import Prediction, Radiograph
from tests.conftest import FIXTURES, IMAGES
from tests.factories import RadiographFactory
from worker import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def shipped() -> Any:
    from classifier.predict import Predictor, default_model_path

    predictor = Predictor.load(default_model_path())
    if ood_reference(predictor.card) is None:
        pytest.fail(f"the shipped model {predictor.version} has no out-of-distribution reference in its card")
    return predictor


@pytest.fixture
def served(shipped: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    tasks.reset_predictor_for_tests()
    monkeypatch.setattr("worker.tasks.get_predictor", lambda: shipped)
    yield shipped


def _upload(path: Path) -> Radiograph:
    data = path.read_bytes()
    height, width = decode_grayscale(data).shape
    radiograph = RadiographFactory(
        image=ContentFile(data, name=path.name),
        width=width,
        height=height,
        format="JPEG",
        sha256=path.name.ljust(64, "0"),
    )
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    return radiograph


def test_a_scanned_document_is_not_analysed(served: Any) -> None:
    radiograph = _upload(FIXTURES / "ood" / "document_scan.jpg")
    assert radiograph.status == Radiograph.Status.NOT_ANALYSED
    refusal = GuardrailRefusal.objects.get(radiograph=radiograph)
    assert refusal.code == "out_of_distribution" and refusal.model_version == served.version
    assert refusal.details["distance"] > refusal.details["threshold"] == served.card["ood"]["threshold"]
    assert not Prediction.objects.filter(radiograph=radiograph).exists()


def test_a_radiograph_is_analysed(served: Any) -> None:
    radiograph = _upload(IMAGES / "fracatlas_fractured_IMG0000480.jpg")
    assert radiograph.status == Radiograph.Status.PREDICTED
    assert not GuardrailRefusal.objects.exists()


def test_the_distance_separates_the_document_from_the_radiograph_fixtures(shipped: Any) -> None:
    radiographs = [
        IMAGES / n
        for n in (
            "kaggle_fractured_1.jpg",
            "kaggle_not_fractured_1.jpg",
            "fracatlas_not_fractured_IMG0000263.jpg",
        )
    ]
    images = [
        decode_grayscale(p.read_bytes()) for p in [*radiographs, FIXTURES / "ood" / "document_scan.jpg"]
    ]
    distances = ood_distances(np.asarray(shipped.embed(images)), shipped.card["ood"])
    threshold = shipped.card["ood"]["threshold"]
    assert all(d < threshold for d in distances[:-1]) and distances[-1] > threshold


def test_the_card_distance_flags_a_ct_slice_and_a_document_and_passes_the_radiograph_fixtures(
    shipped: Any,
) -> None:
    assert shipped.card["ood"]["method"] == "pca_mahalanobis"
    names = sorted(
        p for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png", ".gif") and "truncated" not in p.name
    )
    others = [FIXTURES / "ood" / n for n in ("ct_chest_slice.png", "document_scan.jpg", "photo_china.jpg")]
    images = [decode_grayscale(p.read_bytes()) for p in [*names, *others]]
    distances = ood_distances(np.asarray(shipped.embed(images)), shipped.card["ood"])
    threshold = shipped.card["ood"]["threshold"]
    radiographs, (ct, document, photo) = distances[: len(names)], distances[len(names) :]
    assert ct > threshold and document > threshold
    assert photo < threshold  # the known gap (see the module docstring)
    # About 1 % of val radiographs are flagged by construction; of these 11 real fixtures one is (an RGBA PNG).
    assert np.sum(radiographs > threshold) <= 1
