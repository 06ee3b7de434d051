"""Monitoring cells from aggregate counts; the daily drift check and its e-mail."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core import mail
from django.utils import timezone

from radiology.governance.drift import drift_check
from radiology.governance.models import DriftAlert, GuardrailRefusal, ModelVersion, RadiographInputStats
from radiology.governance.monitoring import monitoring_refresh, monitoring_table
from radiology.governance.registry import model_version_register
from radiology.governance.stats import paired_auc_difference, population_stability_index
from radiology.models import AuditEvent, Label
from tests.factories import PatientFactory, PredictionFactory, RadiographFactory, ReviewFactory, StudyFactory

pytestmark = pytest.mark.django_db


def test_monitoring_counts_against_the_reference_standard() -> None:
    study = StudyFactory.create(
        patient=PatientFactory.create(date_of_birth=dt.date(1950, 1, 1), sex="F"),
        study_date=dt.date(2026, 3, 4),
    )
    site = {"Manufacturer": "Acme", "ManufacturerModelName": "DR-1", "StationName": "ED1"}
    outcomes = [(0.9, True), (0.8, True), (0.2, True), (0.1, False), (0.7, False)]  # tp, tp, fn, tn, fp
    for probability, truth in outcomes:
        prediction = PredictionFactory.create(
            radiograph=RadiographFactory.create(study=study, status="predicted", dicom_attributes=site),
            probability=probability,
            label=Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED,
        )
        ReviewFactory.create(
            prediction=prediction,
            final_label=Label.FRACTURED if truth else Label.NOT_FRACTURED,
            decision="override",
            reason_code="other",
        )
    monitoring_refresh()
    [row] = monitoring_table(by="site")
    assert row.group == ("Acme", "DR-1", "ED1") and row.reviewed == 5
    assert row.sensitivity == pytest.approx(2 / 3) and row.specificity == pytest.approx(1 / 2)
    assert row.agreement == pytest.approx(3 / 5) and row.sensitivity_ci is not None
    [by_age] = monitoring_table(by="age_band")
    assert by_age.group == ("65+",)
    [by_month] = monitoring_table(by="month")
    assert by_month.group == (dt.date(2026, 3, 1),)


def test_the_paired_bootstrap_sees_a_real_difference_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    good = y + rng.normal(0, 0.5, 400)
    worse = y + rng.normal(0, 1.5, 400)
    clusters = np.arange(400) // 2
    diff = paired_auc_difference(y, good, worse, clusters, replicates=300)
    assert diff.difference < 0 and diff.high < 0  # the worse model is worse, with confidence
    same = paired_auc_difference(y, good, good + rng.normal(0, 1e-3, 400), clusters, replicates=300)
    assert same.low < 0 < same.high or abs(same.difference) < 1e-3


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    reference = [0.1] * 10
    assert population_stability_index(reference, [100] * 10) == pytest.approx(0.0)
    assert population_stability_index(reference, [0] * 8 + [500, 500]) > 1.0


def _card_with_reference(tmp: Path, source: Path) -> Path:
    import json
    import shutil

    dest = tmp / "ref-model"
    shutil.copytree(source, dest)
    card = json.loads((dest / "card.json").read_text())
    card["version"] = "tiny-ref"
    card["reference"] = {
        "score": {"edges": [i / 10 for i in range(11)], "fractions": [0.1] * 10},
        "intensity": {"edges": list(range(0, 257, 16)), "fractions": [1 / 16] * 16},
        "long_side": {"edges": [0, 1000, 2000, 3000, 100000], "fractions": [0.1, 0.4, 0.4, 0.1]},
    }
    (dest / "card.json").write_text(json.dumps(card))
    return dest


def _site_radiographs(
    n: int,
    *,
    probabilities: Any,
    site: str,
    histogram: list[float],
    refused: int = 0,
    failed: int = 0,
    long_side: int | None = None,
) -> None:
    attributes = {"Manufacturer": site, "ManufacturerModelName": "X", "StationName": "S"}
    for i in range(n):
        radiograph = RadiographFactory.create(status="predicted", dicom_attributes=attributes)
        PredictionFactory.create(
            radiograph=radiograph, model_version="tiny-ref", probability=float(probabilities[i])
        )
        # Sizes as the reference has them: 10 % under 1000 px, 40 % 1000-2000, 40 % 2000-3000, 10 % above.
        side = long_side or (500, 1500, 1500, 1500, 1500, 2500, 2500, 2500, 2500, 3500)[i % 10]
        RadiographInputStats.objects.create(
            radiograph=radiograph, long_side=side, mean_intensity=100.0, intensity_histogram=histogram
        )
    for _ in range(refused):
        radiograph = RadiographFactory.create(status="not_analysed", dicom_attributes=attributes)
        GuardrailRefusal.objects.create(
            radiograph=radiograph, model_version="tiny-ref", code="modality", reason="CT"
        )
    for _ in range(failed):
        RadiographFactory.create(status="failed", failure_message="unreadable", dicom_attributes=attributes)


@pytest.fixture
def reference_model(tiny_model_dir: Path, tmp_path: Path, roles: None) -> ModelVersion:
    return model_version_register(path=_card_with_reference(tmp_path, tiny_model_dir), status="active")


def test_a_shifted_site_raises_an_alert_and_an_email(
    reference_model: ModelVersion, admin: Any, settings: Any
) -> None:
    settings.GOVERNANCE_DRIFT_MIN_SAMPLE = 20
    admin.email = "radiology-admin@example.org"
    admin.save()
    uniform = [1 / 16] * 16
    rng = np.random.default_rng(0)
    _site_radiographs(40, probabilities=rng.uniform(0, 1, 40), site="Steady", histogram=uniform)
    dark = [0.5, 0.5] + [0.0] * 14  # every pixel in the two darkest bins: a new processing preset
    _site_radiographs(40, probabilities=rng.uniform(0.9, 1.0, 40), site="Shifted", histogram=dark, refused=10)
    alerts = drift_check(now=timezone.now() + dt.timedelta(minutes=1))
    found = {(a.site, a.statistic) for a in alerts}
    assert found == {
        ("Shifted / X / S", "psi_score"),
        ("Shifted / X / S", "psi_intensity"),
        ("Shifted / X / S", "share_not_analysed"),
    }
    assert AuditEvent.objects.filter(action=AuditEvent.Action.DRIFT_ALERT).count() == 3
    [message] = mail.outbox
    assert message.to == ["radiology-admin@example.org"] and "Shifted / X / S" in message.body
    # The same findings later that day raise nothing new.
    assert drift_check(now=timezone.now() + dt.timedelta(minutes=2)) == []
    assert DriftAlert.objects.count() == 3


def test_the_one_alert_a_day_is_counted_on_the_checks_own_day(
    reference_model: ModelVersion, settings: Any
) -> None:
    # A check for 23:59 tomorrow, another for 30 s later (the same day), a third two minutes later (the day
    # after): whatever the wall clock says while they run, the alerts belong to the day each check is for.
    # (They once belonged to the rows' creation day: a run near midnight raised the same alerts twice.)
    settings.GOVERNANCE_DRIFT_MIN_SAMPLE = 20
    rng = np.random.default_rng(0)
    _site_radiographs(40, probabilities=rng.uniform(0, 1, 40), site="Steady", histogram=[1 / 16] * 16)
    dark = [0.5, 0.5] + [0.0] * 14
    _site_radiographs(40, probabilities=rng.uniform(0.9, 1.0, 40), site="Shifted", histogram=dark, refused=10)
    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    late = timezone.make_aware(dt.datetime.combine(tomorrow, dt.time(23, 59)))
    assert len(drift_check(now=late)) == 3
    assert drift_check(now=late + dt.timedelta(seconds=30)) == []
    next_day = drift_check(now=late + dt.timedelta(minutes=2))
    assert {timezone.localdate(a.window_end) for a in next_day} == {tomorrow + dt.timedelta(days=1)}
    assert len(next_day) == 3


def test_no_alert_without_a_shift(reference_model: ModelVersion, settings: Any) -> None:
    settings.GOVERNANCE_DRIFT_MIN_SAMPLE = 20
    rng = np.random.default_rng(1)
    _site_radiographs(60, probabilities=rng.uniform(0, 1, 60), site="Steady", histogram=[1 / 16] * 16)
    assert drift_check(now=timezone.now() + dt.timedelta(minutes=1)) == []
    assert not mail.outbox


def test_the_daily_drift_task_is_scheduled(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["check-drift"]
    assert entry["task"] == "worker.governance_tasks.check_drift"
    assert entry["schedule"].hour == {settings.GOVERNANCE_DRIFT_HOUR_UTC}


def test_ood_distances_by_each_card_method() -> None:
    from classifier.card import ood_distances

    e = np.array([[1.0, 2.0], [3.0, 2.0]])
    diag = {"method": "mahalanobis_diag", "centroid": [1.0, 2.0], "scale": [2.0, 1.0]}
    assert ood_distances(e, diag) == pytest.approx([0.0, np.sqrt(0.5)])
    pca = {
        "method": "pca_mahalanobis",
        "centroid": [1.0, 2.0],
        "components": [[1.0, 0.0]],
        "variances": [4.0],
    }
    assert ood_distances(e, pca) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="do not match"):
        ood_distances(np.zeros((1, 3)), diag)


def test_smaller_images_and_many_failures_at_a_site_raise_alerts(
    reference_model: ModelVersion, settings: Any
) -> None:
    settings.GOVERNANCE_DRIFT_MIN_SAMPLE = 20
    rng = np.random.default_rng(2)
    # A new device sends 600-pixel images (the reference: 10 % under 1000 px) and fails on 8 of 48.
    _site_radiographs(
        40,
        probabilities=rng.uniform(0, 1, 40),
        site="NewDevice",
        histogram=[1 / 16] * 16,
        failed=8,
        long_side=600,
    )
    found = {a.statistic for a in drift_check(now=timezone.now() + dt.timedelta(minutes=1))}
    assert found == {"psi_long_side", "share_failed"}
