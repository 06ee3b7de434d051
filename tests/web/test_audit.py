"""The audit dashboard and the CSV export: figures per model version that an auditor can check by hand."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from radiology import selectors, services
from radiology.governance.models import ModelVersion
from radiology.models import AuditEvent, Radiograph
from radiology.selectors.audit import card_bands
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = reverse("radiology:audit_dashboard")
EXPORT = reverse("radiology:prediction_export")


@pytest.fixture
def reviewed(make_study: MakeStudy, clinician: Any) -> None:
    """Model v1: 3 true positives, 1 missed fracture, 1 false alarm, 2 true negatives, 1 unreviewed.
    Model v2: 1 true positive. One v1 radiograph was reviewed twice: only the latest review counts."""
    for _ in range(3):
        make_study(probabilities=[0.9], reviews=[("confirm",)], model_version="v1")
    make_study(
        probabilities=[0.2], reviews=[("override", "fractured", "missed_fracture")], model_version="v1"
    )
    make_study(probabilities=[0.8], reviews=[("override", "not_fractured", "hardware")], model_version="v1")
    twice = make_study(probabilities=[0.1], reviews=[("override", "fractured", "other")], model_version="v1")
    services.review_submit(radiograph_id=twice.radiographs.get().pk, reviewer=clinician, decision="confirm")
    make_study(probabilities=[0.3], reviews=[("confirm",)], model_version="v1")
    make_study(probabilities=[0.6], model_version="v1")
    make_study(probabilities=[0.7], reviews=[("confirm",)], model_version="v2")


def test_per_version_confusion_matrix_sensitivity_and_specificity(admin: Any, reviewed: None) -> None:
    versions = {v.model_version: v for v in selectors.audit_model_versions(user=admin)}
    v1 = versions["v1"]
    assert v1.predictions == 8 and v1.reviewed == 7
    assert (v1.true_positives, v1.false_negatives, v1.false_positives, v1.true_negatives) == (3, 1, 1, 2)
    assert v1.sensitivity.value == pytest.approx(3 / 4)
    assert v1.specificity.value == pytest.approx(2 / 3)
    assert v1.agreement.value == pytest.approx(5 / 7)
    low, high = v1.sensitivity.interval or (0, 0)
    assert 0.25 < low < 0.75 < high < 1.0
    assert [(code, count) for code, _, count in v1.override_reasons] == [
        ("missed_fracture", 1),
        ("hardware", 1),
    ]
    assert versions["v2"].reviewed == 1 and versions["v2"].sensitivity.value == 1.0
    assert versions["v2"].specificity.value is None


def test_per_band_what_the_clinicians_found(admin: Any, reviewed: None) -> None:
    """v1's bands (operating points 0.3 and 0.7): 0.9 x 3 and 0.8 in Fracture, the 0.3 in Doubt (the 0.6 is
    not reviewed), the 0.2 and the 0.1 in No fracture; one fracture found in No fracture, three in Fracture."""
    v1 = next(v for v in selectors.audit_model_versions(user=admin) if v.model_version == "v1")
    rows = {row.band: row for row in v1.band_rows}
    assert [row.band for row in v1.band_rows] == ["fracture", "doubt", "no_fracture"]
    assert (rows["fracture"].reviewed, rows["fracture"].called_fractured.k) == (4, 3)
    assert (rows["doubt"].reviewed, rows["doubt"].called_fractured.k) == (1, 0)
    assert (rows["no_fracture"].reviewed, rows["no_fracture"].called_fractured.k) == (2, 1)
    assert rows["fracture"].of_reviewed.value == pytest.approx(4 / 7)
    assert rows["fracture"].card == []  # v1 is not registered: no card to compare with


def test_card_bands_reads_the_shipped_cards_test_figures() -> None:
    card = json.loads((ROOT / "models" / "lite0-det-v2.3" / "card.json").read_text())
    bands = card_bands(card["metrics"]["test"]["sources"])
    fracatlas = {b.source: b for b in bands["fracture"]}["fracatlas"]
    # The card's FracAtlas test split: 397 images, 69 fractured; 48 in Fracture, 34 of them fractured.
    assert (fracatlas.fractured, fracatlas.images) == (34, 48)
    assert fracatlas.fractured_share == pytest.approx(34 / 48)
    assert fracatlas.share == pytest.approx(48 / 397)
    assert fracatlas.prevalence == pytest.approx(69 / 397)
    missed = {b.source: b for b in bands["no_fracture"]}
    assert (missed["fracatlas"].fractured, missed["fracatlas"].images) == (4, 191)
    assert (missed["kaggle"].fractured, missed["kaggle"].images) == (0, 175)
    assert card_bands(None) == {} and card_bands({"kaggle": {"images": {"n": 3}}}) == {}


def test_dashboard_shows_each_band_beside_the_cards_test_figures(
    admin_client_: Client, reviewed: None
) -> None:
    card = json.loads((ROOT / "models" / "lite0-det-v2.3" / "card.json").read_text())
    ModelVersion.objects.create(
        version="v1",
        artifact_path="-",
        artifact_sha256="0" * 64,
        card=card,
        status="retired",
        status_changed_at=timezone.now(),
    )
    page = admin_client_.get(DASHBOARD).content.decode()
    section = page[page.index(">Model v1</h2>") :]
    section = section[: section.index("</section>")]
    fracture = section[section.index('data-band="fracture">') + len('data-band="fracture">') :]
    fracture = " ".join(re.sub(r"<[^>]+>", " ", fracture[: fracture.index("</tr>")]).split())
    assert fracture.startswith("Fracture 4 57 % of reviewed 75 % 3 of 4 · 95 % CI 30–95 %")
    assert "FracAtlas: 71 % fractured (34 of 48; 12 % of its images)" in fracture
    assert "Kaggle: 87 % fractured (130 of 149; 35 % of its images)" in fracture
    assert "17 % fractured images (FracAtlas) and 32 % fractured images (Kaggle)" in section


def test_agreement_over_time_counts_standing_reviews(admin: Any, reviewed: None) -> None:
    points = {p.model_version: p for p in selectors.audit_agreement_by_day(user=admin)}
    assert (points["v1"].reviewed, points["v1"].agreed) == (7, 5)
    assert (points["v2"].reviewed, points["v2"].agreed) == (1, 1)


def test_dashboard_shows_the_figures_the_chart_and_the_latest_reviews(
    admin_client_: Client, reviewed: None
) -> None:
    page = admin_client_.get(DASHBOARD).content.decode()
    assert "Model v1" in page and "Model v2" in page
    assert "75 %" in page and "67 %" in page  # sensitivity and specificity of v1
    assert "Orthopaedic hardware misled the model" in page
    assert '<svg class="chart"' in page and "<polyline" in page
    assert page.count("data-review=") == 9
    assert "style=" not in page  # the CSP forbids inline styles; charts use classes and attributes


def test_the_latest_reviews_say_the_band_the_reader_saw_and_the_label_counted(
    admin_client_: Client, make_study: MakeStudy
) -> None:
    """A 45 % prediction above the sensitive threshold is counted "fractured" by the agreement figures, but
    the reader saw "Doubt · 45 %": the row says both, never a bare "Fractured 0.45"."""
    study = make_study(
        probabilities=[0.45], threshold=0.3, reviews=[("override", "not_fractured", "false_alarm")]
    )
    page = admin_client_.get(DASHBOARD).content.decode()
    row = page[page.index(f'data-review="{study.radiographs.get().reviews.get().pk}"') :]
    cell = row[row.index('class="model-said"') :]
    cell = cell[: cell.index("</td>")]
    assert "Doubt · 45 %" in cell and "counted fractured" in cell


def test_dashboard_filters_by_date(admin_client_: Client, reviewed: None) -> None:
    page = admin_client_.get(DASHBOARD, {"date_from": "2001-01-01", "date_to": "2001-01-31"}).content.decode()
    assert "No predictions in this period" in page


def test_dashboard_is_for_admins_only(clinician_client: Client, clinician: Any) -> None:
    assert clinician_client.get(DASHBOARD).status_code == 403
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED, actor=clinician).exists()
    assert selectors.audit_model_versions(user=clinician) == []


def test_dashboard_queries_are_bounded(
    admin_client_: Client, reviewed: None, django_assert_max_num_queries: Any
) -> None:
    # session, user, groups; versions, override reasons, the versions' cards, agreement by day, latest
    # reviews; the reader /
    # model / final figures (standing reviews, adjudications); the site setting and how many readers chose
    # for themselves; session save
    with django_assert_max_num_queries(15):
        assert admin_client_.get(DASHBOARD).status_code == 200


def _csv(response: Any) -> list[dict[str, str]]:
    content = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(content)))


def test_export_joins_each_prediction_with_its_latest_review_and_is_audited(
    admin_client_: Client, admin: Any, reviewed: None
) -> None:
    response = admin_client_.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    assert len(rows) == 9
    twice = next(r for r in rows if r["review_count"] == "2")
    assert (twice["review_decision"], twice["review_final_label"], twice["agrees_with_model"]) == (
        "confirm",
        "not_fractured",
        "yes",
    )
    unreviewed = next(r for r in rows if r["review_count"] == "0")
    assert unreviewed["review_decision"] == "" and unreviewed["agrees_with_model"] == ""
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT)
    assert event.actor == admin and event.details["rows"] == 9


def test_export_for_one_model_version(admin_client_: Client, reviewed: None) -> None:
    rows = _csv(admin_client_.get(EXPORT, {"model_version": "v2"}))
    assert [r["model_version"] for r in rows] == ["v2"]


def test_export_neutralises_spreadsheet_formulas(
    admin_client_: Client, make_study: MakeStudy, clinician: Any
) -> None:
    study = make_study(probabilities=[0.9])
    services.review_submit(
        radiograph_id=Radiograph.objects.get(study=study).pk,
        reviewer=clinician,
        decision="override",
        reason_code="other",
        reason_text='=HYPERLINK("http://example.invalid")',
    )
    rows = _csv(admin_client_.get(EXPORT))
    assert rows[0]["review_reason_text"].startswith("'=")
