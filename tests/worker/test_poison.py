"""No radiograph loops for ever: lost attempts are capped, and a refused heatmap write ends in a readable
failure instead of a RUNNING row the sweep re-sends every few minutes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.utils import timezone

from radiology import services
from radiology.models import AuditEvent, Prediction, Radiograph
from tests.conftest import FakePredictor
from tests.factories import RadiographFactory
from worker import tasks

pytestmark = pytest.mark.django_db


def _lost(attempts: int) -> Radiograph:
    """A radiograph claimed `attempts` times, the last claim long ago (its worker died)."""
    radiograph = RadiographFactory.create()
    Radiograph.objects.filter(pk=radiograph.pk).update(
        status=Radiograph.Status.RUNNING,
        attempts=attempts,
        claimed_at=timezone.now() - dt.timedelta(hours=1),
        created_at=timezone.now() - dt.timedelta(hours=2),
    )
    return radiograph


def test_a_radiograph_whose_every_attempt_was_lost_is_failed_not_sent_again(
    settings: Any, dispatched: Any
) -> None:
    settings.CLASSIFY_MAX_ATTEMPTS = 3
    poison, unlucky = _lost(attempts=3), _lost(attempts=1)

    services.radiographs_resend_stale()

    poison.refresh_from_db()
    unlucky.refresh_from_db()
    assert poison.status == Radiograph.Status.FAILED
    assert "never finished" in poison.failure_message
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.RADIOGRAPH_FAILED, target_id=str(poison.pk)
    ).exists()
    assert unlucky.status == Radiograph.Status.QUEUED  # a first loss is sent again
    assert dispatched.sent == [unlucky.pk]


def test_a_refused_heatmap_write_is_retried_then_failed_readably(
    fake_predictor: FakePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = cv2.imencode(".png", np.full((64, 96), 200, np.uint8))[1].tobytes()
    radiograph = RadiographFactory.create(image=ContentFile(png, name="x.png"), width=96, height=64)
    before = (
        set(default_storage.listdir("predictions")[1]) if default_storage.exists("predictions") else set()
    )
    saves = {"n": 0}

    def refuse(*args: Any, **kwargs: Any) -> str:
        saves["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "_save", refuse)
    tasks.classify_radiograph.apply(args=[radiograph.pk])

    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert radiograph.failure_message.startswith("The result could not be saved")
    assert "No space" not in radiograph.failure_message  # the reason in words, not the OS error
    assert saves["n"] == tasks.MAX_RETRIES + 1
    assert not Prediction.objects.exists()
    after = set(default_storage.listdir("predictions")[1]) if default_storage.exists("predictions") else set()
    assert after == before


def _queued_png() -> Radiograph:
    png = cv2.imencode(".png", np.full((64, 96), 200, np.uint8))[1].tobytes()
    return RadiographFactory.create(image=ContentFile(png, name="x.png"), width=96, height=64)


def test_a_time_limit_reached_while_a_fresh_process_loads_the_model_is_retried(
    fake_predictor: FakePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    radiograph = _queued_png()
    calls = {"n": 0}

    def slow_first_load() -> FakePredictor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SoftTimeLimitExceeded()  # the limit struck while the task waited for the model
        return fake_predictor

    monkeypatch.setattr(tasks, "get_predictor", slow_first_load)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.PREDICTED
    assert Prediction.objects.filter(radiograph=radiograph).count() == 1


def test_a_time_limit_reached_with_the_model_loaded_fails_readably(
    fake_predictor: FakePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    radiograph = _queued_png()

    def stuck(*args: Any, **kwargs: Any) -> Any:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(tasks, "_predictor", fake_predictor)  # loaded before the task began
    monkeypatch.setattr(fake_predictor, "predict", stuck)
    tasks.classify_radiograph.apply(args=[radiograph.pk])
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert radiograph.failure_message == "Classification took too long and was stopped. Try again later."


def test_claims_given_back_for_a_retry_are_not_counted_as_lost(settings: Any, dispatched: Any) -> None:
    """A database or storage blip makes the task give its claim back and retry (a few times): those claims
    were not lost. Counted, they used up CLASSIFY_MAX_ATTEMPTS, and a single worker death afterwards failed
    the radiograph as "started several times and never finished"."""
    settings.CLASSIFY_MAX_ATTEMPTS = 3
    radiograph = RadiographFactory.create(status=Radiograph.Status.QUEUED)
    for _retry in range(4):  # claimed, then given back by a task meeting a transient error
        assert services.radiograph_claim(radiograph_id=radiograph.pk)
        services.radiograph_release(radiograph_id=radiograph.pk)
    assert services.radiograph_claim(radiograph_id=radiograph.pk)  # the worker dies holding this claim
    Radiograph.objects.filter(pk=radiograph.pk).update(
        claimed_at=timezone.now() - dt.timedelta(hours=1), created_at=timezone.now() - dt.timedelta(hours=2)
    )

    services.radiographs_resend_stale()

    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.QUEUED  # one lost claim: sent again, not failed
    assert dispatched.sent == [radiograph.pk]
