"""The classification task: claims, predicts, stores once, retries what is transient, explains failures."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import OperationalError

from classifier.explain import stored_to_overlay_png
from radiology import services
from radiology.models import Prediction, Radiograph, Study
from tests.conftest import FakePredictor, fixture_bytes
from tests.factories import RadiographFactory
from worker import tasks

pytestmark = pytest.mark.django_db


def _radiograph(content: bytes, **kwargs: Any) -> Radiograph:
    radiograph = RadiographFactory.create(image=ContentFile(content, name="x.png"), **kwargs)
    return radiograph


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((64, 96), value, np.uint8))[1].tobytes()


def test_it_stores_a_prediction_with_heatmap(fake_predictor: FakePredictor) -> None:
    radiograph = _radiograph(_png(230), width=96, height=64)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.PREDICTED
    prediction = Prediction.objects.get(radiograph=radiograph)
    assert prediction.model_version == "fake-model-1"
    assert prediction.probability == pytest.approx(230 / 255, abs=1e-3)
    assert prediction.label == "fractured"
    assert prediction.threshold == 0.5
    # The band and the operating points come from the predictor; the box is in the image's own pixels.
    assert prediction.band == "fracture"
    assert (prediction.threshold_sensitive, prediction.threshold_specific) == (0.3, 0.7)
    assert prediction.boxes == [
        {"x0": 12.0, "y0": 8.0, "x1": 36.0, "y1": 24.0, "score": pytest.approx(0.902, abs=1e-3)}
    ]
    # Stored: the map's levels, greyscale, at the map's resolution; coloured only when viewed.
    stored = prediction.heatmap.read()
    levels = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_UNCHANGED)
    assert levels is not None and levels.ndim == 2 and levels.dtype == np.uint8
    overlay = cv2.imdecode(
        np.frombuffer(stored_to_overlay_png(stored, 96, 64), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert overlay is not None and overlay.shape == (
        64,
        96,
        4,
    )  # the viewer's overlay: the radiograph's shape, with transparency


def test_a_redelivered_message_stores_nothing_new(fake_predictor: FakePredictor) -> None:
    radiograph = _radiograph(_png(40))
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    assert Prediction.objects.filter(radiograph=radiograph).count() == 1
    assert fake_predictor.batches == [1]


def test_a_claimed_radiograph_is_left_to_its_worker(fake_predictor: FakePredictor) -> None:
    radiograph = _radiograph(_png(40))
    assert services.radiograph_claim(radiograph_id=radiograph.pk)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    assert not Prediction.objects.exists()
    assert fake_predictor.batches == []


def test_queued_radiographs_are_classified_in_one_batch(fake_predictor: FakePredictor, settings: Any) -> None:
    settings.CLASSIFIER_MAX_BATCH = 4
    first = _radiograph(_png(10))
    rest = [_radiograph(_png(20 + i)) for i in range(3)]
    Radiograph.objects.filter(pk__in=[r.pk for r in rest]).update(dispatched_at="2026-01-01T00:00:00Z")
    tasks.classify_radiograph.apply(args=[first.pk])
    assert fake_predictor.batches == [4]
    assert Prediction.objects.count() == 4


def test_a_corrupt_stored_image_fails_with_a_readable_message(fake_predictor: FakePredictor) -> None:
    radiograph = _radiograph(fixture_bytes("images/kaggle_truncated.jpg"))
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert (
        "truncated" in radiograph.failure_message.lower() or "corrupt" in radiograph.failure_message.lower()
    )
    assert "Traceback" not in radiograph.failure_message
    assert Study.objects.get(pk=radiograph.study_id).state == Study.State.FAILED


def test_a_missing_stored_file_fails_with_a_readable_message(fake_predictor: FakePredictor) -> None:
    radiograph = _radiograph(_png(10))
    radiograph.image.storage.delete(radiograph.image.name or "")
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert "missing" in radiograph.failure_message


def test_an_unavailable_model_fails_the_radiograph_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise tasks.ModelUnavailableError(
            "The classification model is unavailable: model.keras does not exist."
        )

    monkeypatch.setattr(tasks, "get_predictor", broken)
    radiograph = _radiograph(_png(10))
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert "model is unavailable" in radiograph.failure_message


def test_a_transient_database_error_is_retried(
    fake_predictor: FakePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    radiograph = _radiograph(_png(200))
    original = services.prediction_store_batch
    calls = {"n": 0}

    def flaky_store(**kwargs: Any) -> list[Prediction]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return original(**kwargs)

    monkeypatch.setattr(services, "prediction_store_batch", flaky_store)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert calls["n"] == 2
    assert radiograph.status == Radiograph.Status.PREDICTED
    assert radiograph.attempts == 1  # the claim given back for the retry is not a lost attempt
    assert Prediction.objects.filter(radiograph=radiograph).count() == 1


def test_a_persistent_database_error_ends_in_a_stored_failure(
    fake_predictor: FakePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    radiograph = _radiograph(_png(200))

    def always_down(**kwargs: Any) -> list[Prediction]:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(services, "prediction_store_batch", always_down)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert "unavailable" in radiograph.failure_message
    assert not Prediction.objects.exists()


def test_the_sweep_task_resends(dispatched: Any) -> None:
    radiograph = RadiographFactory.create()
    Radiograph.objects.filter(pk=radiograph.pk).update(created_at="2026-01-01T00:00:00Z")
    assert tasks.sweep_stale_radiographs.apply().get() == 1
    assert dispatched.sent == [radiograph.pk]


def test_the_real_predictor_is_loaded_once_per_process(tiny_model_dir: Any, settings: Any) -> None:
    settings.CLASSIFIER_MODEL = str(tiny_model_dir)
    tasks.reset_predictor_for_tests()
    try:
        first = tasks.get_predictor()
        assert tasks.get_predictor() is first
        result = first.predict([np.full((100, 80), 128, np.uint8)], heatmaps=True)[0]
        assert 0.0 <= result.probability <= 1.0
        assert result.label in {"fractured", "not_fractured"}
    finally:
        tasks.reset_predictor_for_tests()


def test_a_missing_model_is_reported_not_crashed(tmp_path: Any, settings: Any) -> None:
    settings.CLASSIFIER_MODEL = str(tmp_path / "nowhere")
    tasks.reset_predictor_for_tests()
    try:
        with pytest.raises(tasks.ModelUnavailableError) as caught:
            tasks.get_predictor()
        assert "does not exist" in str(caught.value)
    finally:
        tasks.reset_predictor_for_tests()


def test_expired_idempotency_records_are_purged(settings: Any, clinician: Any) -> None:
    import datetime as dt

    from radiology.models import IdempotencyRecord

    settings.API_IDEMPOTENCY_TTL_HOURS = 1
    old = IdempotencyRecord.objects.create(user=clinician, key="old-key", fingerprint="a" * 64)
    fresh = IdempotencyRecord.objects.create(user=clinician, key="fresh-key", fingerprint="b" * 64)
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert tasks.purge_expired_idempotency_records.apply().get() == 1
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [fresh.pk]


def test_the_batch_s_own_messages_are_answered_without_the_database(
    fake_predictor: FakePredictor, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.CLASSIFIER_MAX_BATCH = 4
    first = _radiograph(_png(10))
    rest = [_radiograph(_png(20 + i)) for i in range(3)]
    Radiograph.objects.filter(pk__in=[r.pk for r in rest]).update(dispatched_at="2026-01-01T00:00:00Z")
    tasks.classify_radiograph.apply(args=[first.pk])
    with django_assert_num_queries(0):
        for radiograph in rest:
            tasks.classify_radiograph.apply(args=[radiograph.pk])
    assert fake_predictor.batches == [4]
    # Only once: a later message for the same radiograph asks the database again.
    tasks.classify_radiograph.apply(args=[rest[0].pk])
    assert Prediction.objects.count() == 4


def test_a_batch_is_stored_with_a_fixed_number_of_queries(
    fake_predictor: FakePredictor, settings: Any, django_assert_max_num_queries: Any
) -> None:
    settings.CLASSIFIER_MAX_BATCH = 8
    first = _radiograph(_png(10))
    rest = [_radiograph(_png(20 + i)) for i in range(7)]
    Radiograph.objects.filter(pk__in=[r.pk for r in rest]).update(dispatched_at="2026-01-01T00:00:00Z")
    # 28 for the whole batch, where it was about 10 per radiograph: claim 3 (+2 savepoints), read the rows 1,
    # store 8 (lock, existing, insert, status update, the studies' triage 4; +2 savepoints), the audit event 3
    # (the chain head's lock and advance, the insert; +2 savepoints), the input statistics 1, the registry's
    # active and shadow versions 2 (asked at most every 10 s; each test starts with none remembered) and the
    # audit dashboard's prediction tally 1, or 4 on a model version's first batch of the day (an update that
    # finds no row, a savepoint, the insert, its release), as here.
    with django_assert_max_num_queries(28):
        tasks.classify_radiograph.apply(args=[first.pk])
    assert fake_predictor.batches == [8]
    assert Radiograph.objects.filter(status=Radiograph.Status.PREDICTED).count() == 8
    assert Study.objects.filter(state=Study.State.AWAITING_REVIEW).count() == 8
