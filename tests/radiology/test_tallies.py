"""Figures kept on rows or in running totals for the 1,000,000-radiograph scale (radiology.tallies): they
must always equal what counting the records says, through every change the services make."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count, Max, Min, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from radiology import selectors, services
from radiology.models import (
    Adjudication,
    Label,
    Prediction,
    PredictionTally,
    Radiograph,
    RadiographTally,
    Review,
    ReviewTally,
    Study,
    StudyTally,
)
from radiology.selectors.reading import audit_reading
from tests.factories import ClinicianFactory, PredictionFactory, RadiographFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _store(radiograph: Radiograph, probability: float, version: str = "v1") -> Prediction:
    band = "fracture" if probability >= 0.7 else "doubt" if probability >= 0.3 else "no_fracture"
    return services.prediction_store(
        radiograph_id=radiograph.pk,
        model_version=version,
        probability=probability,
        label=Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED,
        band=band,
        threshold=0.5,
        threshold_sensitive=0.3,
        threshold_specific=0.7,
        heatmap_png=None,
        inference_ms=5.0,
    )


# --- A radiograph's current label and band, a study's verdict ---------------------------------------------


def test_current_label_band_and_study_verdict_follow_each_new_prediction() -> None:
    study = StudyFactory.create(radiograph_count=2)
    a, b = (
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(2)
    )

    def state() -> tuple[tuple[str, str], tuple[str, str], str]:
        a.refresh_from_db()
        b.refresh_from_db()
        study.refresh_from_db()
        return (a.current_label, a.current_band), (b.current_label, b.current_band), study.verdict

    assert state() == (("", ""), ("", ""), "")
    _store(a, 0.2)
    assert state() == (("not_fractured", "no_fracture"), ("", ""), "not_fractured")
    _store(b, 0.9)
    assert state() == (("not_fractured", "no_fracture"), ("fractured", "fracture"), "fractured")
    _store(b, 0.4, version="v2")  # a newer model re-reads b: its current prediction changes
    assert state() == (("not_fractured", "no_fracture"), ("not_fractured", "doubt"), "not_fractured")
    _store(a, 0.6, version="v2")
    assert state() == (("fractured", "doubt"), ("not_fractured", "doubt"), "fractured")


def test_a_radiograph_is_marked_reviewed_by_its_first_review(clinician: Any) -> None:
    prediction = PredictionFactory.create(probability=0.9, label=Label.FRACTURED)
    assert Radiograph.objects.get(pk=prediction.radiograph_id).has_review is False
    services.review_submit(radiograph_id=prediction.radiograph_id, reviewer=clinician, decision="confirm")
    assert Radiograph.objects.get(pk=prediction.radiograph_id).has_review is True


def test_pointing_radiographs_at_their_newest_prediction_copies_label_and_band() -> None:
    prediction = PredictionFactory.create(probability=0.95, label=Label.FRACTURED)
    Radiograph.objects.update(current_prediction=None, current_label="", current_band="")
    services.radiographs_set_current_prediction(radiograph_ids=[prediction.radiograph_id])
    radiograph = Radiograph.objects.get(pk=prediction.radiograph_id)
    assert (radiograph.current_prediction_id, radiograph.current_label, radiograph.current_band) == (
        prediction.pk,
        "fractured",
        "fracture",
    )


# --- The audit dashboard's tallies ------------------------------------------------------------------------


def _tallies() -> tuple[dict[Any, Any], Counter[tuple[Any, ...]]]:
    predictions = {
        (t.model_version, t.day): (t.predictions, t.first_at, t.last_at)
        for t in PredictionTally.objects.all()
    }
    reviews: Counter[tuple[Any, ...]] = Counter()
    for row in ReviewTally.objects.values_list(*ReviewTally.KEY, "reviews"):
        if row[-1]:
            reviews[row[:-1]] += row[-1]
    return predictions, reviews


def _counted_from_the_records() -> tuple[dict[Any, Any], Counter[tuple[Any, ...]]]:
    """The same figures by aggregating every prediction and standing review (the slow way)."""
    predictions = {
        (row["model_version"], row["day"]): (row["n"], row["first"], row["last"])
        for row in Prediction.objects.annotate(day=TruncDate("created_at"))
        .values("model_version", "day")
        .annotate(n=Count("*"), first=Min("created_at"), last=Max("created_at"))
    }
    reference = (
        Adjudication.objects.filter(radiograph_id=OuterRef("radiograph_id"), state="decided")
        .order_by("-decided_at", "-pk")
        .values("label")[:1]
    )
    reviews: Counter[tuple[Any, ...]] = Counter()
    for review in (
        Review.objects.standing()
        .annotate(reference=Coalesce(Subquery(reference), Value("")))
        .select_related("prediction")
    ):
        reviews[
            (
                review.prediction.model_version,
                timezone.localdate(review.prediction.created_at),
                timezone.localdate(review.created_at),
                review.prediction.label,
                review.prediction.band,
                review.final_label,
                review.decision,
                review.reason_code,
                review.unaided_label,
                review.reference,
            )
        ] += 1
    return predictions, reviews


def _reviewed_workload(clinician: Any) -> dict[str, Radiograph]:
    """Predictions by two model versions, confirmations, overrides, a re-review, a whole study confirmed,
    a blinded reader's unaided call and an adjudication."""
    second, third = ClinicianFactory.create(username="dr.bo"), ClinicianFactory.create(username="dr.cy")
    study = StudyFactory.create(radiograph_count=3)
    r = [
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(3)
    ]
    alone = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    for radiograph, probability in zip([*r, alone], [0.9, 0.1, 0.55, 0.8], strict=True):
        _store(radiograph, probability)
    services.review_submit(radiograph_id=r[0].pk, reviewer=clinician, decision="confirm")
    services.review_submit(
        radiograph_id=r[1].pk, reviewer=clinician, decision="override", reason_code="missed_fracture"
    )
    # Re-reviewed: the later review stands, the earlier one no longer counts.
    services.review_submit(radiograph_id=r[1].pk, reviewer=second, decision="confirm")
    services.study_confirm(study_id=study.pk, reviewer=clinician)  # r[2]
    # A newer model re-reads `alone`; a blinded reader calls it first, then overrides the model.
    _store(alone, 0.95, version="v2")
    services.reader_setting_update(user=second, blinded=True)
    services.unaided_read_record(radiograph_ids=[alone.pk], reader=second, label=Label.NOT_FRACTURED)
    review = services.review_submit(
        radiograph_id=alone.pk, reviewer=second, decision="override", reason_code="old_fracture"
    )
    adjudication = Adjudication.objects.get(review=review)  # against a confident "fracture" band
    services.adjudication_decide(adjudication_id=adjudication.pk, adjudicator=third, label=Label.FRACTURED)
    return {"study": r[0], "alone": alone}


def test_the_tallies_equal_the_records_through_reviews_overrides_re_reviews_and_adjudication(
    clinician: Any,
) -> None:
    _reviewed_workload(clinician)
    kept = _tallies()
    assert kept == _counted_from_the_records()
    # Standing reviews: r0, r1 (its re-review), r2 and alone's v2 prediction (its v1 one was never reviewed).
    assert sum(kept[1].values()) == 4
    assert kept[1][next(k for k in kept[1] if k[0] == "v2")] == 1
    with transaction.atomic():
        assert services.tallies_rebuild() == (2, len(kept[1]))
    assert _tallies() == kept


def test_the_dashboard_reads_the_tallies_and_shows_what_the_records_say(clinician: Any, admin: Any) -> None:
    _reviewed_workload(clinician)
    versions = {v.model_version: v for v in selectors.audit_model_versions(user=admin)}
    v1, v2 = versions["v1"], versions["v2"]
    assert (v1.predictions, v2.predictions) == (4, 1)
    # v1: r0 fractured confirmed; r1 not fractured, overridden then confirmed (stands: confirm); r2
    # fractured confirmed. v2: fractured, overridden to not fractured (old fracture).
    assert (v1.true_positives, v1.true_negatives, v1.false_positives, v1.false_negatives) == (2, 1, 0, 0)
    assert (v2.false_positives, v2.overrides) == (1, 1)
    assert [code for code, _, _ in v2.override_reasons] == ["old_fracture"]
    assert v1.override_reasons == []
    points = {(p.model_version, p.reviewed, p.agreed) for p in selectors.audit_agreement_by_day(user=admin)}
    assert points == {("v1", 3, 3), ("v2", 1, 0)}
    reading = {a.model_version: a for a in audit_reading(user=admin)}
    assert (reading["v2"].reviewed, reading["v2"].adjudicated, reading["v2"].blinded) == (1, 1, 1)
    # The adjudicated label (fractured) is the reference: the model was right, the final call (the same
    # as the unaided one) wrong.
    assert reading["v2"].counts["model"]["tp"] == 1 and reading["v2"].counts["final"]["fn"] == 1
    assert reading["v2"].counts["unaided"]["fn"] == 1 and reading["v2"].changed == 0
    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    assert selectors.audit_model_versions(user=admin, date_from=tomorrow) == []
    assert selectors.audit_agreement_by_day(user=admin, date_from=tomorrow) == []
    assert selectors.audit_model_versions(user=clinician) == []


def test_rebuild_tallies_command_recomputes_them(clinician: Any) -> None:
    _reviewed_workload(clinician)
    kept = _tallies()
    ReviewTally.objects.all().delete()
    PredictionTally.objects.update(predictions=0)
    call_command("rebuild_tallies", verbosity=0)
    assert _tallies() == kept


# --- The queue's tab counts ---------------------------------------------------------------------------------


def _study_tally() -> dict[tuple[str, str], int]:
    # On PostgreSQL the triggers fire at once in these tests (conftest's _tallies_at_once).
    return {(t.state, t.body_region): t.studies for t in StudyTally.objects.all() if t.studies}


def _counted_studies() -> dict[tuple[str, str], int]:
    rows = Study.objects.order_by().values("state", "body_region").annotate(n=Count("*"))
    return {(row["state"], row["body_region"]): row["n"] for row in rows}


def test_study_tally_follows_every_state_and_region_change(clinician: Any) -> None:
    study = StudyFactory.create(radiograph_count=2, body_region="wrist")
    a, b = (
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(2)
    )
    other = RadiographFactory.create(status=Radiograph.Status.RUNNING, study__body_region="ankle")
    seen = [_study_tally()]
    _store(a, 0.8)
    _store(b, 0.2)
    seen.append(_study_tally())
    services.radiograph_fail(radiograph_id=other.pk, message="Unreadable.")
    seen.append(_study_tally())
    services.study_confirm(study_id=study.pk, reviewer=clinician)
    seen.append(_study_tally())
    services.radiograph_retry(radiograph_id=other.pk, actor=clinician)  # failed -> processing
    seen.append(_study_tally())
    Study.objects.filter(pk=other.study_id).update(body_region="foot")  # an admin's correction
    seen.append(_study_tally())
    assert seen == [
        {("processing", "wrist"): 1, ("processing", "ankle"): 1},
        {("awaiting_review", "wrist"): 1, ("processing", "ankle"): 1},
        {("awaiting_review", "wrist"): 1, ("failed", "ankle"): 1},
        {("reviewed", "wrist"): 1, ("failed", "ankle"): 1},
        {("reviewed", "wrist"): 1, ("processing", "ankle"): 1},
        {("reviewed", "wrist"): 1, ("processing", "foot"): 1},
    ]
    assert seen[-1] == _counted_studies()


def test_tab_counts_from_the_tally_equal_a_count_of_the_studies(clinician: Any, outsider: Any) -> None:
    for state, region in [("reviewed", "wrist"), ("reviewed", "hand"), ("awaiting_review", "wrist")]:
        StudyFactory.create(state=state, body_region=region)
    StudyFactory.create(state="failed", body_region="hand")
    StudyFactory.create(state="not_analysed", body_region="wrist")
    _study_tally()
    assert selectors.study_queue_counts(user=clinician) == {
        "processing": 0,
        "awaiting_review": 1,
        "reviewed": 2,
        "failed": 1,
        "not_analysed": 1,
    }
    assert selectors.study_queue_counts(user=clinician, body_region="hand") == {
        "processing": 0,
        "awaiting_review": 0,
        "reviewed": 1,
        "failed": 1,
        "not_analysed": 0,
    }
    assert set(selectors.study_queue_counts(user=outsider).values()) == {0}


# --- The radiograph list's count ----------------------------------------------------------------------------


def _radiograph_tally() -> int:
    # On PostgreSQL the triggers fire at once in these tests (conftest's _tallies_at_once).
    return RadiographTally.objects.get(pk=1).radiographs


def test_radiograph_tally_counts_inserts_and_deletes_but_not_status_changes() -> None:
    study = StudyFactory.create(radiograph_count=3)
    radiographs = [
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(3)
    ]
    seen = [_radiograph_tally()]
    _store(radiographs[0], 0.8)
    services.radiograph_fail(radiograph_id=radiographs[1].pk, message="Unreadable.")
    seen.append(_radiograph_tally())
    Radiograph.objects.filter(pk=radiographs[2].pk).delete()
    seen.append(_radiograph_tally())
    assert seen == [3, 3, 2] and seen[-1] == Radiograph.objects.count()


@pytest.mark.parametrize("tally_emptied_first", [False, True], ids=["radiographs-first", "tally-first"])
def test_radiograph_tally_starts_again_after_a_flush(tally_emptied_first: bool) -> None:
    """A flushed database (every table emptied, in whatever order `flush` lists them: on SQLite it deletes
    row by row, firing the triggers) has no tally row: the next insert makes it. A deletion that finds no
    tally row leaves none (it made one at -1 per radiograph before migration 0027: the tally then stayed
    that far below the count, and the API's radiograph list failed on a negative count)."""
    RadiographFactory.create_batch(2)
    tables = [Radiograph, RadiographTally]
    for model in reversed(tables) if tally_emptied_first else tables:
        model._default_manager.all().delete()
    RadiographFactory.create()
    assert _radiograph_tally() == 1 == Radiograph.objects.count()


@pytest.mark.e2e  # run in the PostgreSQL pass (make test-e2e-services): the deferred triggers, committed
@pytest.mark.django_db(transaction=True)
def test_radiograph_tally_sums_each_committed_transaction_and_forgets_a_rolled_back_savepoint() -> None:
    study = StudyFactory.create(radiograph_count=0)
    with transaction.atomic():  # one bulk transaction: counted once, at commit
        Radiograph.objects.bulk_create(
            RadiographFactory.build(study=study, position=i, sha256=f"{i:064x}") for i in range(2000)
        )
        with pytest.raises(RuntimeError), transaction.atomic():
            RadiographFactory.create(study=study, position=9999)
            raise RuntimeError("rolled back")
        Radiograph.objects.filter(position__lt=10).delete()
    assert RadiographTally.objects.get(pk=1).radiographs == Radiograph.objects.count() == 1990
    with transaction.atomic():
        RadiographFactory.create(study=study, position=5000)
        Radiograph.objects.filter(position=5000).delete()  # in and out again: no change
    assert RadiographTally.objects.get(pk=1).radiographs == 1990


@pytest.mark.e2e  # run in the PostgreSQL pass: the deferred triggers, committed (migration 0023)
@pytest.mark.django_db(transaction=True)
def test_study_tally_sums_each_committed_transaction_per_state_and_region() -> None:
    with transaction.atomic():
        studies = [
            StudyFactory.create(state="processing", body_region=("wrist", "ankle")[i % 2]) for i in range(30)
        ]
        Study.objects.filter(pk__in=[s.pk for s in studies[:10]]).update(state="reviewed")
        with pytest.raises(RuntimeError), transaction.atomic():
            StudyFactory.create(state="failed", body_region="hip")
            Study.objects.filter(pk=studies[-1].pk).update(body_region="foot")
            raise RuntimeError("rolled back")
        Study.objects.filter(pk=studies[-2].pk).delete()
    assert (
        _study_tally()
        == _counted_studies()
        == {
            ("reviewed", "wrist"): 5,
            ("reviewed", "ankle"): 5,
            ("processing", "wrist"): 9,
            ("processing", "ankle"): 10,
        }
    )


def test_rebuild_tallies_recounts_the_totals_the_triggers_keep() -> None:
    """After a load that bypassed the triggers (here: the counters set wrong by hand), the command puts
    them back to what counting the rows says."""
    for state, region in [("reviewed", "wrist"), ("reviewed", "wrist"), ("failed", "hip")]:
        RadiographFactory.create(study=StudyFactory.create(state=state, body_region=region))
    StudyTally.objects.update(studies=77)
    StudyTally.objects.create(state="processing", body_region="foot", studies=5)
    RadiographTally.objects.update(radiographs=0)
    call_command("rebuild_tallies", verbosity=0)
    assert _study_tally() == _counted_studies() == {("reviewed", "wrist"): 2, ("failed", "hip"): 1}
    assert _radiograph_tally() == Radiograph.objects.count() == 3
