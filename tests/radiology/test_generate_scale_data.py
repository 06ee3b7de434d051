"""generate_scale_data: a synthetic workload that the application itself would have produced."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db import models
from django.db.models import Sum

from radiology import services
from radiology.models import (
    Patient,
    Prediction,
    PredictionTally,
    Radiograph,
    RadiographTally,
    Review,
    ReviewTally,
    Study,
    StudyTally,
)

pytestmark = pytest.mark.django_db


def test_it_creates_consistent_studies_in_every_state() -> None:
    call_command("generate_scale_data", studies=60, radiographs_per_study=3, seed=1, verbosity=0)
    studies = list(Study.objects.filter(accession_number__startswith="SYN-"))
    assert len(studies) == 60
    assert Radiograph.objects.count() == 180
    assert {s.state for s in studies} == set(Study.State.values)
    # A declined radiograph carries the refusal that declined it, as the worker's guardrail path leaves it.
    declined = Radiograph.objects.filter(status=Radiograph.Status.NOT_ANALYSED)
    assert declined.exists() and not declined.filter(refusals__isnull=True).exists()
    assert Patient.objects.filter(name__startswith="Synthetic").count() == 40
    assert Prediction.objects.values("model_version").distinct().count() > 1
    assert Review.objects.filter(decision=Review.Decision.OVERRIDE).exclude(reason_code="").exists()
    # Each radiograph points at its newest prediction, as the storing service would have left it.
    current = dict(Radiograph.objects.values_list("pk", "current_prediction_id"))
    assert (
        sum(1 for value in current.values() if value) == Radiograph.objects.filter(status="predicted").count()
    )
    services.radiographs_set_current_prediction(radiograph_ids=list(current))
    assert dict(Radiograph.objects.values_list("pk", "current_prediction_id")) == current
    # The running totals count what was written: studies per state (triggers), and the audit dashboard's
    # predictions and standing reviews (recounted at the end).
    tallied = dict(StudyTally.objects.values("state").annotate(n=Sum("studies")).values_list("state", "n"))
    assert {k: v for k, v in tallied.items() if v} == dict(Counter(s.state for s in studies))
    assert PredictionTally.objects.aggregate(n=Sum("predictions"))["n"] == Prediction.objects.count()
    assert RadiographTally.objects.get().radiographs == Radiograph.objects.count()
    assert ReviewTally.objects.aggregate(n=Sum("reviews"))["n"] == Review.objects.standing().count()
    # Every study's triage summary is what the service computes from its radiographs.
    generated = {s.pk: (s.state, s.max_probability, s.failed_count, s.reviewed_at is None) for s in studies}
    services.studies_refresh_triage(study_ids=list(generated))
    for study in Study.objects.filter(pk__in=generated):
        assert (
            study.state,
            study.max_probability,
            study.failed_count,
            study.reviewed_at is None,
        ) == generated[study.pk]


def test_it_adds_to_existing_rows_without_id_clashes() -> None:
    call_command("generate_scale_data", studies=5, prefix="A", verbosity=0)
    call_command("generate_scale_data", studies=5, prefix="B", verbosity=0)
    assert Study.objects.count() == 10
    assert Radiograph.objects.count() == 30
    assert (
        Review.objects.filter(prediction__radiograph_id=models.F("radiograph_id")).count()
        == Review.objects.count()
    )


def test_it_refuses_to_add_the_same_prefix_twice() -> None:
    call_command("generate_scale_data", studies=2, verbosity=0)
    with pytest.raises(CommandError, match="prefix"):
        call_command("generate_scale_data", studies=2, verbosity=0)
