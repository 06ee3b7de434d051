"""Shadow versions predict on their own queue and never reach a clinician; guardrails refuse what the
model must not be trusted on, with the reason shown instead of a verdict."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from radiology.governance.models import GuardrailRefusal, ModelVersion, ShadowPrediction
from radiology.governance.registry import model_version_register
from radiology.models import AuditEvent, Prediction, Radiograph, Study
from tests.conftest import FakePredictor
from tests.factories import PatientFactory, RadiographFactory, StudyFactory
from worker import governance_tasks, tasks

pytestmark = pytest.mark.django_db


def _png(value: int, shape: tuple[int, int] = (64, 96)) -> bytes:
    return cv2.imencode(".png", np.full(shape, value, np.uint8))[1].tobytes()


def _radiograph(value: int = 200, **kwargs: Any) -> Radiograph:
    return RadiographFactory.create(
        image=ContentFile(_png(value), name="x.png"), width=96, height=64, **kwargs
    )


class ShadowFake(FakePredictor):
    """A different version that scores the inverse of the active fake: easy to tell apart."""

    version = "tiny-shadow"

    def predict(self, images: Any, *, heatmaps: bool = True) -> list[Any]:
        return super().predict([255 - np.asarray(i) for i in images], heatmaps=heatmaps)


@pytest.fixture
def shadow_registered(
    tiny_model_dir: Path, shadow_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> ShadowFake:
    model_version_register(path=tiny_model_dir, status="active")
    model_version_register(path=shadow_model_dir, status="shadow")
    shadow = ShadowFake()
    monkeypatch.setattr(governance_tasks, "get_shadow_predictor", lambda version: shadow)
    return shadow


@pytest.fixture
def shadow_sent(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    sent: list[list[int]] = []

    def send(ids: Iterable[int]) -> bool:
        sent.append(list(ids))
        return True

    monkeypatch.setattr("radiology.dispatch.send_shadow_predictions", send)
    return sent


def test_a_shadow_version_predicts_on_its_own_queue(
    fake_predictor: FakePredictor, shadow_registered: ShadowFake, shadow_sent: list[list[int]], settings: Any
) -> None:
    radiograph = _radiograph(200)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    # The active prediction is stored first; the shadow work is a separate message on the shadow queue.
    assert Prediction.objects.filter(radiograph=radiograph).count() == 1
    assert not ShadowPrediction.objects.exists()
    assert shadow_sent == [[radiograph.pk]]
    assert settings.CELERY_TASK_ROUTES["worker.governance_tasks.shadow_predict"] == {"queue": "shadow"}
    assert governance_tasks.shadow_predict.apply(args=[shadow_sent[0]]).result == 1
    shadow = ShadowPrediction.objects.get(radiograph=radiograph)
    assert shadow.model_version == "tiny-shadow"
    assert shadow.probability == pytest.approx(55 / 255, abs=1e-3)
    # Idempotent: a redelivered shadow message stores nothing new.
    assert governance_tasks.shadow_predict.apply(args=[shadow_sent[0]]).result == 0


def test_shadow_work_is_sent_only_once_the_active_result_is_stored_and_visible(
    fake_predictor: FakePredictor, shadow_registered: ShadowFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shadow never comes before the active prediction: its message leaves after the batch's
    predictions are committed and the radiographs are visible, and goes to a queue the active worker
    does not consume (worker/commands.py; tests/worker/test_shadow_worker.py)."""
    radiographs = [_radiograph(200), _radiograph(90)]
    seen_at_send: list[tuple[int, str, bool]] = []

    def send(ids: list[int]) -> bool:
        for radiograph in Radiograph.objects.filter(pk__in=ids):
            seen_at_send.append(
                (radiograph.pk, radiograph.status, Prediction.objects.filter(radiograph=radiograph).exists())
            )
        return True

    monkeypatch.setattr("radiology.dispatch.send_shadow_predictions", send)
    for radiograph in radiographs:
        tasks.classify_radiograph.apply(args=[radiograph.pk])
    assert sorted(seen_at_send) == sorted((r.pk, Radiograph.Status.PREDICTED, True) for r in radiographs)
    assert not ShadowPrediction.objects.exists()  # nothing of the shadow's ran on the active path


def test_no_shadow_work_is_sent_without_a_shadow_version(
    fake_predictor: FakePredictor, shadow_sent: list[list[int]]
) -> None:
    tasks.classify_radiograph.apply(args=[_radiograph().pk])
    assert shadow_sent == []


def test_shadow_results_are_never_shown_to_clinicians(
    fake_predictor: FakePredictor,
    shadow_registered: ShadowFake,
    shadow_sent: list[list[int]],
    clinician_client: Client,
) -> None:
    radiograph = _radiograph(200)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    governance_tasks.shadow_predict.apply(args=[[radiograph.pk]])
    shadow = ShadowPrediction.objects.get(radiograph=radiograph)
    active = Prediction.objects.get(radiograph=radiograph)
    study = Study.objects.get(pk=radiograph.study_id)
    assert study.max_probability == pytest.approx(active.probability)  # the queue's triage: active only
    pages = [
        clinician_client.get(reverse("radiology:study_detail", args=[study.pk])),
        clinician_client.get(reverse("radiology:queue")),
        clinician_client.get(reverse("radiology:study_status", args=[study.pk])),
        clinician_client.get(f"/api/v1/radiographs/{radiograph.pk}"),
        clinician_client.get(f"/api/v1/studies/{study.pk}"),
        clinician_client.get("/api/v1/radiographs"),
    ]
    for response in pages:
        assert response.status_code == 200, response
        body = response.content.decode()
        assert "tiny-shadow" not in body
        for shown in (
            f"{shadow.probability:.2f}",
            f"{shadow.probability:.3f}",
            f"{round(shadow.probability * 100)} %",
        ):
            assert shown not in body, (response.request["PATH_INFO"], shown)


@dataclass(frozen=True)
class _WithEmbedding:
    probability: float
    label: str
    heatmap: Any
    band: str
    boxes: tuple[Any, ...]
    embedding: np.ndarray


class CardedFake(FakePredictor):
    """The fake with a card that declares its intended use and an OOD reference: the embedding is the
    image's mean brightness and contrast, the training centroid a mid-grey radiograph."""

    card: dict[str, Any] = {
        "intended_use": {
            "modalities": ["DX", "CR", "DR"],
            "body_regions": ["wrist", "hand"],
            "min_age_years": 18,
        },
        "ood": {
            "method": "mahalanobis_diag",
            "centroid": [120.0, 40.0],
            "scale": [20.0, 10.0],
            "threshold": 3.0,
        },
    }

    def predict(self, images: Any, *, heatmaps: bool = True) -> list[Any]:
        results = super().predict(images, heatmaps=heatmaps)
        return [
            _WithEmbedding(
                r.probability,
                r.label,
                r.heatmap,
                r.band,
                r.boxes,
                np.array([float(np.mean(i)), float(np.std(i))]),
            )
            for r, i in zip(results, images, strict=True)
        ]


@pytest.fixture
def carded(monkeypatch: pytest.MonkeyPatch) -> CardedFake:
    from worker.tasks import reset_predictor_for_tests

    reset_predictor_for_tests()
    predictor = CardedFake()
    monkeypatch.setattr("worker.tasks.get_predictor", lambda: predictor)
    return predictor


def _textured(mean: int, spread: int) -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(mean, spread, (64, 96)), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


def _classify(radiograph: Radiograph) -> Radiograph:
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    return radiograph


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"dicom_attributes": {"Modality": "CT"}}, "modality", "This is a CT image"),
        ({"dicom_attributes": {"Modality": "SC"}}, "modality", "secondary capture"),
        ({"study__body_region": "knee"}, "body_region", "not trained on the knee"),
    ],
)
def test_metadata_guardrails_refuse_with_a_reason(
    carded: CardedFake, kwargs: dict, code: str, words: str
) -> None:
    radiograph = _classify(
        RadiographFactory.create(image=ContentFile(_textured(120, 40), name="x.png"), **kwargs)
    )
    assert radiograph.status == Radiograph.Status.NOT_ANALYSED
    assert not Prediction.objects.filter(radiograph=radiograph).exists()
    refusal = GuardrailRefusal.objects.get(radiograph=radiograph)
    assert refusal.code == code and words in refusal.reason
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.RADIOGRAPH_NOT_ANALYSED, target_id=str(radiograph.pk)
    ).exists()


def test_a_child_is_not_analysed_by_an_adult_model(carded: CardedFake) -> None:
    study = StudyFactory.create(
        patient=PatientFactory.create(date_of_birth=dt.date(2015, 5, 1)), study_date=dt.date(2026, 4, 30)
    )
    radiograph = _classify(
        RadiographFactory.create(study=study, image=ContentFile(_textured(120, 40), name="x.png"))
    )
    assert radiograph.status == Radiograph.Status.NOT_ANALYSED
    assert GuardrailRefusal.objects.get(radiograph=radiograph).details == {
        "age_years": 10,
        "min_age_years": 18,
    }


def test_an_adult_radiograph_in_distribution_is_analysed(carded: CardedFake) -> None:
    study = StudyFactory.create(
        patient=PatientFactory.create(date_of_birth=dt.date(1980, 1, 1)), body_region="wrist"
    )
    radiograph = _classify(
        RadiographFactory.create(
            study=study,
            image=ContentFile(_textured(120, 40), name="x.png"),
            dicom_attributes={"Modality": "DX"},
        )
    )
    assert radiograph.status == Radiograph.Status.PREDICTED
    assert not GuardrailRefusal.objects.exists()


def test_an_image_far_from_the_training_images_is_not_analysed(carded: CardedFake) -> None:
    # Flat white (a scanned page): far from the centroid in brightness and in contrast.
    radiograph = _classify(RadiographFactory.create(image=ContentFile(_textured(250, 2), name="x.png")))
    assert radiograph.status == Radiograph.Status.NOT_ANALYSED
    refusal = GuardrailRefusal.objects.get(radiograph=radiograph)
    assert (
        refusal.code == "out_of_distribution" and refusal.details["distance"] > refusal.details["threshold"]
    )
    assert not Prediction.objects.filter(radiograph=radiograph).exists()


def test_the_study_page_shows_the_reason_instead_of_a_verdict(
    carded: CardedFake, clinician_client: Client
) -> None:
    radiograph = _classify(
        RadiographFactory.create(
            image=ContentFile(_textured(120, 40), name="x.png"), dicom_attributes={"Modality": "CT"}
        )
    )
    body = clinician_client.get(
        reverse("radiology:study_detail", args=[radiograph.study_id])
    ).content.decode()
    assert "Not analysed" in body and "This is a CT image" in body


def test_the_registry_makes_the_configured_model_active_on_a_fresh_installation(
    tiny_model_dir: Path, settings: Any
) -> None:
    settings.CLASSIFIER_MODEL = str(tiny_model_dir)
    assert governance_tasks.active_model_path() == tiny_model_dir.resolve()
    assert ModelVersion.objects.get().status == "active"


class OnePassFake(CardedFake):
    """Like the real Predictor: returns embeddings from the forward pass when asked, and has embed()."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[bool] = []
        self.embed_calls = 0

    def predict(self, images: Any, *, heatmaps: bool = True, embeddings: bool = False) -> list[Any]:
        self.asked.append(embeddings)
        return super().predict(images, heatmaps=heatmaps)

    def embed(self, images: Any) -> np.ndarray:
        self.embed_calls += 1
        return np.zeros((len(images), 2))


def test_the_guardrail_uses_the_forward_pass_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.tasks import reset_predictor_for_tests

    reset_predictor_for_tests()
    predictor = OnePassFake()
    monkeypatch.setattr("worker.tasks.get_predictor", lambda: predictor)
    radiograph = _classify(RadiographFactory.create(image=ContentFile(_textured(250, 2), name="x.png")))
    assert predictor.asked == [True] and predictor.embed_calls == 0  # one forward pass, not two
    assert radiograph.status == Radiograph.Status.NOT_ANALYSED
