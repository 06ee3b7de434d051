"""Fixtures for the web UI tests: studies in a given triage state, built with factories and summarised by
the same service the worker and the review path use (so `state` and `max_probability` are real)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from radiology import services
from radiology.models import Label, Radiograph, Study
from tests.factories import PredictionFactory, RadiographFactory, ReviewFactory, StudyFactory


def png_bytes(value: int = 120, size: tuple[int, int] = (64, 48)) -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((size[1], size[0]), value, np.uint8))
    assert ok
    return encoded.tobytes()


def heatmap_png() -> bytes:
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 128
    ok, encoded = cv2.imencode(".png", rgba)
    assert ok
    return encoded.tobytes()


MakeStudy = Callable[..., Study]


@pytest.fixture
def make_study(clinician: Any) -> MakeStudy:
    """make_study(probabilities=[0.93, None], failed=1, reviewed=[...]) -> a study in the state they imply.

    `probabilities`: one radiograph per entry; a number gets a prediction, None leaves it queued.
    `reviews`: per radiograph, None or (decision, final_label[, reason_code]) applied through services.
    """

    def make(
        *,
        probabilities: Sequence[float | None] = (0.9,),
        failed: int = 0,
        reviews: Sequence[tuple[str, ...] | None] = (),
        threshold: float = 0.5,
        model_version: str = "test-model-1",
        reviewer: Any = None,
        **study_fields: Any,
    ) -> Study:
        study = StudyFactory.create(uploaded_by=clinician, **study_fields)
        radiographs = []
        for position, probability in enumerate(probabilities):
            radiograph = RadiographFactory.create(
                study=study,
                position=position,
                status=Radiograph.Status.QUEUED if probability is None else Radiograph.Status.PREDICTED,
                image=ContentFile(png_bytes(), name="r.png"),
            )
            radiographs.append(radiograph)
            if probability is not None:
                PredictionFactory.create(
                    radiograph=radiograph,
                    probability=probability,
                    threshold=threshold,
                    label=Label.FRACTURED if probability >= threshold else Label.NOT_FRACTURED,
                    model_version=model_version,
                    heatmap=ContentFile(heatmap_png(), name="h.png"),
                )
        for offset in range(failed):
            RadiographFactory.create(
                study=study,
                position=len(probabilities) + offset,
                status=Radiograph.Status.FAILED,
                failure_message="The image could not be decoded.",
            )
        with transaction.atomic():
            services.study_refresh_triage(study_id=study.pk)
        for radiograph, review in zip(radiographs, reviews, strict=False):
            if review is None:
                continue
            decision, final_label, reason = (*review, "", "")[:3]
            services.review_submit(
                radiograph_id=radiograph.pk,
                reviewer=reviewer or clinician,
                decision=decision,
                final_label=final_label or None,
                reason_code=reason,
                reason_text="seen on the film" if reason == "other" else "",
            )
        study.refresh_from_db()
        return study

    return make


__all__ = ["MakeStudy", "ReviewFactory", "heatmap_png", "png_bytes"]
