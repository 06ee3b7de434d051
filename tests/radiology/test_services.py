"""Services: uploads keep good files and explain bad ones, predictions are stored once, reviews are exact."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import IntegrityError

from radiology import services
from radiology.models import AuditEvent, Label, Patient, Prediction, Radiograph, Review, Study
from radiology.services import ServiceError, StudyDetails, UploadedImage
from tests.conftest import fixture_bytes
from tests.factories import PredictionFactory, RadiographFactory, ReviewFactory, StudyFactory

pytestmark = pytest.mark.django_db

DETAILS = StudyDetails(
    mrn="MRN-42", patient_name="Ada Lovelace", accession_number="ACC-1", body_region="wrist"
)


def _png(value: int = 90, size: int = 64) -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((size, size), value, np.uint8))
    assert ok
    return encoded.tobytes()


def _upload(
    user: Any, files: list[UploadedImage], details: StudyDetails = DETAILS
) -> services.StudyUploadResult:
    return services.study_create(uploaded_by=user, details=details, files=files, client_ip="10.0.0.1")


def _stored_files() -> list[str]:
    found: list[str] = []
    for folder in ("radiographs", "heatmaps"):
        if default_storage.exists(folder):
            found += [f"{folder}/{name}" for name in default_storage.listdir(folder)[1]]
    return found


def test_upload_creates_patient_study_and_queued_radiographs(clinician: Any, dispatched: Any) -> None:
    result = _upload(
        clinician,
        [
            UploadedImage("a.jpg", fixture_bytes("images/kaggle_fractured_1.jpg")),
            UploadedImage("b.png", _png()),
        ],
    )
    assert result.study is not None
    study = Study.objects.get(pk=result.study.pk)
    assert study.patient.mrn == "MRN-42"
    assert study.state == Study.State.PROCESSING
    radiographs = list(study.radiographs.order_by("position"))
    assert [r.status for r in radiographs] == [Radiograph.Status.QUEUED] * 2
    assert [r.original_filename for r in radiographs] == ["a.jpg", "b.png"]
    # Stored under a generated name, never the uploader's.
    # (A random 32-hex name: "a.jpg" may end one by chance, so the shape is checked, not a substring.)
    assert all(re.fullmatch(r"radiographs/[0-9a-f]{32}\.(jpg|png)", r.image.name or "") for r in radiographs)
    assert radiographs[0].image.read() == fixture_bytes("images/kaggle_fractured_1.jpg")
    assert (
        AuditEvent.objects.filter(action=AuditEvent.Action.STUDY_UPLOADED, target_id=str(study.pk)).count()
        == 1
    )


def test_dispatch_waits_for_commit_and_sends_ids_only(
    clinician: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = _upload(clinician, [UploadedImage("a.png", _png())])
    assert dispatched.calls == []  # nothing sent while the transaction was open
    assert len(callbacks) == 1
    callbacks[0]()
    assert dispatched.calls == [[r.pk for r in result.accepted]]
    assert all(isinstance(pk, int) for pk in dispatched.sent)


def test_a_bad_file_does_not_lose_its_good_sibling(clinician: Any) -> None:
    result = _upload(
        clinician,
        [UploadedImage("good.png", _png()), UploadedImage("bad.png", b"not an image at all")],
    )
    assert result.study is not None
    assert [r.original_filename for r in result.accepted] == ["good.png"]
    assert [(e.filename, e.code) for e in result.rejected] == [("bad.png", "unsupported_format")]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.FILE_REJECTED).count() == 1


def test_when_every_file_fails_nothing_is_created(clinician: Any) -> None:
    result = _upload(clinician, [UploadedImage("bad.png", b""), UploadedImage("worse.jpg", b"\xff\xd8\xff")])
    assert result.study is None
    assert len(result.rejected) == 2
    assert not Study.objects.exists()
    assert not Patient.objects.exists()
    assert not Radiograph.objects.exists()
    assert _stored_files() == []


def test_the_same_image_twice_in_one_upload_is_refused_once(clinician: Any) -> None:
    result = _upload(clinician, [UploadedImage("a.png", _png()), UploadedImage("copy.png", _png())])
    assert len(result.accepted) == 1
    assert result.rejected[0].code == "duplicate_file"


def test_too_many_files_is_refused(clinician: Any, settings: Any) -> None:
    settings.UPLOAD_MAX_FILES_PER_STUDY = 2
    with pytest.raises(ServiceError) as caught:
        _upload(clinician, [UploadedImage(f"{i}.png", _png(i + 1)) for i in range(3)])
    assert caught.value.code == "too_many_files"
    assert not Study.objects.exists()


def test_duplicate_accession_is_refused_without_leaving_files(clinician: Any) -> None:
    _upload(clinician, [UploadedImage("a.png", _png(10))])
    files_before = _stored_files()
    with pytest.raises(ServiceError) as caught:
        _upload(clinician, [UploadedImage("b.png", _png(20))])
    assert caught.value.code == "duplicate_accession"
    assert Study.objects.count() == 1
    assert _stored_files() == files_before


def test_a_known_mrn_with_another_name_is_refused(clinician: Any) -> None:
    _upload(clinician, [UploadedImage("a.png", _png(10))])
    other = StudyDetails(
        mrn="MRN-42", patient_name="Someone Else", accession_number="ACC-2", body_region="hand"
    )
    with pytest.raises(ServiceError) as caught:
        _upload(clinician, [UploadedImage("b.png", _png(20))], other)
    assert caught.value.code == "patient_mismatch"
    assert Study.objects.count() == 1


def test_a_returning_patient_gets_a_second_study(clinician: Any) -> None:
    _upload(clinician, [UploadedImage("a.png", _png(10))])
    again = StudyDetails(
        mrn="MRN-42", patient_name="ada  LOVELACE", accession_number="ACC-2", body_region="hand"
    )
    _upload(clinician, [UploadedImage("b.png", _png(20))], again)
    assert Patient.objects.count() == 1
    assert Study.objects.count() == 2


def test_a_returning_patient_is_the_same_whatever_the_order_of_the_names(clinician: Any) -> None:
    # Filed from DICOM before names were ordered as people write them (carets became spaces).
    Patient.objects.create(mrn="MRN-42", name="Lovelace Ada")
    _upload(clinician, [UploadedImage("a.png", _png(10))])  # typed "Ada Lovelace"
    assert Patient.objects.count() == 1 and Study.objects.count() == 1
    other = StudyDetails(mrn="MRN-42", patient_name="Ada Byron", accession_number="ACC-2", body_region="hand")
    with pytest.raises(ServiceError) as caught:
        _upload(clinician, [UploadedImage("b.png", _png(20))], other)
    assert caught.value.code == "patient_mismatch"


def test_a_name_sent_in_dicom_form_is_filed_as_people_write_it(clinician: Any) -> None:
    caret = StudyDetails(
        mrn="MRN-7", patient_name=" Lovelace^Ada ", accession_number="ACC-7", body_region="hand"
    )
    result = _upload(clinician, [UploadedImage("a.png", _png(10))], caret)
    assert result.study is not None and result.study.patient.name == "Ada Lovelace"


def test_blank_fields_are_filled_from_dicom(clinician: Any) -> None:
    result = _upload(
        clinician, [UploadedImage("x.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm"))], StudyDetails()
    )
    assert result.study is not None
    study = result.study
    assert study.accession_number == "DCMACC001"
    assert study.body_region == "wrist"
    assert study.study_date == dt.date(2026, 11, 2)
    assert study.patient.mrn == "DCM-0001"
    assert study.patient.name == "Jane Doe"
    assert study.patient.date_of_birth == dt.date(1980, 2, 14)
    assert study.patient.sex == "F"


def test_missing_details_without_dicom_are_refused(clinician: Any) -> None:
    with pytest.raises(ServiceError) as caught:
        _upload(
            clinician,
            [UploadedImage("a.png", _png())],
            StudyDetails(patient_name="X", accession_number="A", body_region="hand"),
        )
    assert caught.value.code == "missing_field"
    assert caught.value.field == "mrn"
    assert not Study.objects.exists()


def test_a_storage_failure_leaves_no_rows_and_no_files(
    clinician: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = FileSystemStorage.save

    def flaky_save(self: FileSystemStorage, name: str, content: Any, max_length: int | None = None) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return original(self, name, content, max_length=max_length)

    monkeypatch.setattr(FileSystemStorage, "save", flaky_save)
    with pytest.raises(ServiceError) as caught:
        _upload(clinician, [UploadedImage("a.png", _png(10)), UploadedImage("b.png", _png(20))])
    assert caught.value.code == "storage_unavailable"
    assert "full" in caught.value.message
    assert not Study.objects.exists()
    assert not Radiograph.objects.exists()
    assert _stored_files() == []


# --- classification ------------------------------------------------------------------------------


def test_claim_is_won_by_exactly_one_caller() -> None:
    radiograph = RadiographFactory.create()
    assert services.radiograph_claim(radiograph_id=radiograph.pk) is True
    assert services.radiograph_claim(radiograph_id=radiograph.pk) is False
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.RUNNING
    assert radiograph.attempts == 1


def test_a_stale_running_claim_can_be_taken_over(settings: Any) -> None:
    settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS = 60
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    Radiograph.objects.filter(pk=radiograph.pk).update(claimed_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert services.radiograph_claim(radiograph_id=radiograph.pk) is True


def test_batch_claim_fills_up_with_other_dispatched_radiographs() -> None:
    first = RadiographFactory.create()
    others = [
        RadiographFactory.create(dispatched_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) for _ in range(3)
    ]
    RadiographFactory.create()  # never dispatched: left for its own message or the sweep
    claimed = services.radiograph_claim_batch(radiograph_id=first.pk, max_batch=3)
    assert claimed[0] == first.pk
    assert len(claimed) == 3
    assert set(claimed[1:]) <= {o.pk for o in others}


def test_batch_claim_returns_nothing_when_the_first_is_taken() -> None:
    first = RadiographFactory.create(status=Radiograph.Status.PREDICTED)
    RadiographFactory.create(dispatched_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert services.radiograph_claim_batch(radiograph_id=first.pk, max_batch=4) == []


def _band(probability: float) -> str:
    return "fracture" if probability >= 0.7 else "doubt" if probability >= 0.3 else "no_fracture"


def _store(
    radiograph: Radiograph, probability: float = 0.8, version: str = "m1", boxes: Any = ()
) -> Prediction:
    return services.prediction_store(
        radiograph_id=radiograph.pk,
        model_version=version,
        probability=probability,
        label=Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED,
        band=_band(probability),
        boxes=boxes,
        threshold=0.5,
        threshold_sensitive=0.3,
        threshold_specific=0.7,
        heatmap_png=_png(),
        inference_ms=5.0,
    )


@dataclass(frozen=True)
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


def test_prediction_store_keeps_band_boxes_and_operating_points() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING, width=200, height=100)
    prediction = _store(radiograph, 0.85, boxes=[_Box(10, 20.5, 60, 80, 0.91)])
    prediction.refresh_from_db()
    assert prediction.band == "fracture"
    assert prediction.boxes == [{"x0": 10.0, "y0": 20.5, "x1": 60.0, "y1": 80.0, "score": 0.91}]
    assert (prediction.threshold_sensitive, prediction.threshold_specific) == (0.3, 0.7)
    assert Study.objects.get(pk=radiograph.study_id).band == "fracture"
    event = AuditEvent.objects.get(action=AuditEvent.Action.PREDICTION_STORED)
    assert event.details["band"] == "fracture" and event.details["boxes"] == 1


def test_a_study_takes_the_highest_band_of_its_images() -> None:
    study = StudyFactory.create(radiograph_count=3)
    radiographs = [
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(3)
    ]
    _store(radiographs[0], 0.1)
    study.refresh_from_db()
    assert study.band == "no_fracture"
    _store(radiographs[1], 0.5)
    _store(radiographs[2], 0.2)
    study.refresh_from_db()
    assert study.band == "doubt"


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ({"x0": 10, "y0": 10, "x1": 250, "y1": 50, "score": 0.5}, "inside"),
        ({"x0": 50, "y0": 10, "x1": 10, "y1": 50, "score": 0.5}, "inside"),
        ({"x0": 10, "y0": 10, "x1": 50, "y1": 50, "score": 1.5}, "score"),
        ({"x0": 10, "y0": float("nan"), "x1": 50, "y1": 50, "score": 0.5}, "finite"),
    ],
)
def test_a_box_the_model_cannot_have_meant_stores_nothing(box: dict[str, float], problem: str) -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING, width=200, height=100)
    with pytest.raises(ValueError, match=problem):
        _store(radiograph, 0.9, boxes=[box])
    assert not Prediction.objects.exists()
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.RUNNING


def test_an_unknown_band_or_reversed_operating_points_store_nothing() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    with pytest.raises(ValueError, match="band"):
        services.prediction_store_batch(
            model_version="m1", threshold=0.5, results=[_result(radiograph, 0.9, band="likely")]
        )
    with pytest.raises(ValueError, match="operating point"):
        services.prediction_store_batch(
            model_version="m1",
            threshold=0.5,
            threshold_sensitive=0.8,
            threshold_specific=0.2,
            results=[_result(radiograph, 0.9)],
        )
    assert not Prediction.objects.exists()


def test_prediction_store_marks_predicted_and_updates_the_study() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    prediction = _store(radiograph, 0.8)
    radiograph.refresh_from_db()
    study = Study.objects.get(pk=radiograph.study_id)
    assert radiograph.status == Radiograph.Status.PREDICTED
    assert (prediction.heatmap.name or "").startswith("heatmaps/")
    assert study.state == Study.State.AWAITING_REVIEW
    assert study.max_probability == pytest.approx(0.8)


def test_prediction_store_is_idempotent() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    first = _store(radiograph, 0.8)
    second = _store(radiograph, 0.3)
    assert first.pk == second.pk
    assert Prediction.objects.count() == 1
    assert len(_stored_files()) == 2  # the image and one heatmap: the repeat wrote nothing


def _result(radiograph: Radiograph, probability: float, band: str | None = None) -> services.PredictionResult:
    label = Label.FRACTURED if probability >= 0.5 else Label.NOT_FRACTURED
    return services.PredictionResult(
        radiograph.pk, probability, label, _png(), 5.0, band or _band(probability)
    )


def test_prediction_store_batch_stores_a_forward_pass_in_one_go(django_assert_max_num_queries: Any) -> None:
    study = StudyFactory.create(radiograph_count=2)
    pair = [
        RadiographFactory.create(study=study, position=i, status=Radiograph.Status.RUNNING) for i in range(2)
    ]
    alone = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    results = [_result(alone, 0.2), _result(pair[1], 0.9), _result(pair[0], 0.4)]
    # lock, existing, two inserts, one update, five for both studies, three for the audit chain (a
    # savepoint, lock and advance its head), and the audit dashboard's prediction tally (an update; on a
    # model version's first prediction of the day, also a savepoint and an insert): however many results.
    with django_assert_max_num_queries(19):
        stored = services.prediction_store_batch(model_version="m1", threshold=0.5, results=results)
    assert [p.radiograph_id for p in stored] == [alone.pk, pair[1].pk, pair[0].pk]
    assert [p.label for p in stored] == ["not_fractured", "fractured", "not_fractured"]
    study.refresh_from_db()
    assert study.state == Study.State.AWAITING_REVIEW
    assert study.max_probability == pytest.approx(0.9)
    assert Study.objects.get(pk=alone.study_id).max_probability == pytest.approx(0.2)
    assert set(Radiograph.objects.values_list("status", flat=True)) == {Radiograph.Status.PREDICTED}
    assert AuditEvent.objects.filter(action=AuditEvent.Action.PREDICTION_STORED).count() == 3
    assert len([f for f in _stored_files() if f.startswith("heatmaps/")]) == 3


def test_prediction_store_batch_skips_what_is_stored_already() -> None:
    done, fresh = (RadiographFactory.create(status=Radiograph.Status.RUNNING) for _ in range(2))
    first = _store(done, 0.8)
    stored = services.prediction_store_batch(
        model_version="m1", threshold=0.5, results=[_result(done, 0.1), _result(fresh, 0.7)]
    )
    assert stored[0].pk == first.pk and stored[0].probability == pytest.approx(0.8)
    assert Prediction.objects.count() == 2
    assert AuditEvent.objects.filter(action=AuditEvent.Action.PREDICTION_STORED).count() == 2


def test_prediction_store_batch_leaves_nothing_behind_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    radiographs = [RadiographFactory.create(status=Radiograph.Status.RUNNING) for _ in range(3)]
    files_before = _stored_files()

    def broken(**kwargs: Any) -> None:
        raise IntegrityError("the database said no")

    monkeypatch.setattr(services.classification, "studies_refresh_triage", broken)
    with pytest.raises(IntegrityError):
        services.prediction_store_batch(
            model_version="m1", threshold=0.5, results=[_result(r, 0.6) for r in radiographs]
        )
    assert not Prediction.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.PREDICTION_STORED).exists()
    assert set(Radiograph.objects.values_list("status", flat=True)) == {Radiograph.Status.RUNNING}
    assert _stored_files() == files_before  # no orphan heatmap


def test_batch_claim_skips_rows_in_flight_and_takes_the_oldest_dispatched_first() -> None:
    first = RadiographFactory.create()
    old, older, running = (
        RadiographFactory.create(dispatched_at=dt.datetime(2026, 1, day, tzinfo=dt.UTC)) for day in (3, 2, 1)
    )
    Radiograph.objects.filter(pk=running.pk).update(status=Radiograph.Status.RUNNING)
    claimed = services.radiograph_claim_batch(radiograph_id=first.pk, max_batch=3)
    assert claimed == [first.pk, older.pk, old.pk]
    assert set(Radiograph.objects.filter(pk__in=claimed).values_list("attempts", flat=True)) == {1}


def test_the_database_refuses_a_second_prediction_for_the_same_model() -> None:
    prediction = PredictionFactory.create()
    with pytest.raises(IntegrityError):
        PredictionFactory.create(radiograph=prediction.radiograph, model_version=prediction.model_version)


def test_a_failure_is_stored_with_a_readable_message() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    services.radiograph_fail(radiograph_id=radiograph.pk, message="The image data is truncated or corrupt.")
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.FAILED
    assert radiograph.failure_message == "The image data is truncated or corrupt."
    assert Study.objects.get(pk=radiograph.study_id).state == Study.State.FAILED


def test_a_late_failure_does_not_undo_a_prediction() -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    _store(radiograph)
    services.radiograph_fail(radiograph_id=radiograph.pk, message="late")
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.PREDICTED


def test_sweep_resends_undispatched_and_stale_work(settings: Any, dispatched: Any) -> None:
    settings.CLASSIFY_RUNNING_TIMEOUT_SECONDS = 60
    settings.CLASSIFY_RESEND_AFTER_SECONDS = 600
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    never_sent = RadiographFactory.create()
    stuck = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    fresh_running = RadiographFactory.create(status=Radiograph.Status.RUNNING)
    recently_sent = RadiographFactory.create()
    Radiograph.objects.filter(pk__in=[never_sent.pk, stuck.pk, fresh_running.pk, recently_sent.pk]).update(
        created_at=old
    )
    Radiograph.objects.filter(pk=stuck.pk).update(claimed_at=old)
    Radiograph.objects.filter(pk=fresh_running.pk).update(claimed_at=dt.datetime.now(dt.UTC))
    Radiograph.objects.filter(pk=recently_sent.pk).update(dispatched_at=dt.datetime.now(dt.UTC))

    resent = services.radiographs_resend_stale()

    assert sorted(resent) == sorted([never_sent.pk, stuck.pk])
    assert sorted(dispatched.sent) == sorted([never_sent.pk, stuck.pk])
    stuck.refresh_from_db()
    fresh_running.refresh_from_db()
    assert stuck.status == Radiograph.Status.QUEUED
    assert fresh_running.status == Radiograph.Status.RUNNING


def test_retry_sends_a_failed_radiograph_again(
    clinician: Any, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    radiograph = RadiographFactory.create(status=Radiograph.Status.FAILED, failure_message="model missing")
    with django_capture_on_commit_callbacks(execute=True):
        services.radiograph_retry(radiograph_id=radiograph.pk, actor=clinician)
    radiograph.refresh_from_db()
    assert radiograph.status == Radiograph.Status.QUEUED
    assert radiograph.failure_message == ""
    assert dispatched.sent == [radiograph.pk]


# --- review --------------------------------------------------------------------------------------


def test_confirm_keeps_the_model_label(clinician: Any) -> None:
    prediction = PredictionFactory.create(label=Label.FRACTURED, probability=0.9)
    review = services.review_submit(
        radiograph_id=prediction.radiograph_id, reviewer=clinician, decision="confirm"
    )
    assert review.final_label == Label.FRACTURED
    assert review.prediction == prediction
    event = AuditEvent.objects.get(action=AuditEvent.Action.REVIEW_SUBMITTED)
    assert event.actor == clinician
    assert event.details["model_label"] == Label.FRACTURED


def test_override_requires_reason(clinician: Any) -> None:
    prediction = PredictionFactory.create(label=Label.FRACTURED)
    with pytest.raises(ServiceError) as caught:
        services.review_submit(
            radiograph_id=prediction.radiograph_id, reviewer=clinician, decision="override"
        )
    assert caught.value.code == "reason_required"
    assert not Review.objects.exists()


def test_override_with_other_requires_text(clinician: Any) -> None:
    prediction = PredictionFactory.create(label=Label.FRACTURED)
    with pytest.raises(ServiceError) as caught:
        services.review_submit(
            radiograph_id=prediction.radiograph_id,
            reviewer=clinician,
            decision="override",
            reason_code="other",
        )
    assert caught.value.field == "reason_text"


def test_override_to_the_same_label_is_refused(clinician: Any) -> None:
    prediction = PredictionFactory.create(label=Label.FRACTURED)
    with pytest.raises(ServiceError) as caught:
        services.review_submit(
            radiograph_id=prediction.radiograph_id,
            reviewer=clinician,
            decision="override",
            final_label=Label.FRACTURED,
            reason_code="false_alarm",
        )
    assert caught.value.code == "override_same_label"


def test_override_records_the_new_label_and_the_study_is_reviewed(clinician: Any) -> None:
    prediction = PredictionFactory.create(label=Label.FRACTURED)
    review = services.review_submit(
        radiograph_id=prediction.radiograph_id,
        reviewer=clinician,
        decision="override",
        reason_code="false_alarm",
    )
    assert review.final_label == Label.NOT_FRACTURED
    study = Study.objects.get(pk=prediction.radiograph.study_id)
    assert study.state == Study.State.REVIEWED
    assert study.reviewed_at is not None


def test_a_later_review_stands_and_the_earlier_one_stays(clinician: Any, admin: Any) -> None:
    earlier = ReviewFactory.create()
    radiograph_id = earlier.radiograph_id
    later = services.review_submit(
        radiograph_id=radiograph_id,
        reviewer=admin,
        decision="override",
        reason_code="image_quality",
        final_label=Label.NOT_FRACTURED if earlier.final_label == Label.FRACTURED else Label.FRACTURED,
    )
    assert Review.objects.filter(radiograph_id=radiograph_id).count() == 2
    assert Review.objects.filter(radiograph_id=radiograph_id).order_by("-created_at", "-pk").first() == later


def test_a_radiograph_without_prediction_cannot_be_reviewed(clinician: Any) -> None:
    radiograph = RadiographFactory.create()
    with pytest.raises(ServiceError) as caught:
        services.review_submit(radiograph_id=radiograph.pk, reviewer=clinician, decision="confirm")
    assert caught.value.code == "not_ready"


def test_the_database_refuses_an_override_without_reason() -> None:
    with pytest.raises(IntegrityError):
        ReviewFactory.create(decision=Review.Decision.OVERRIDE, reason_code="")


def test_queue_state_follows_the_radiographs() -> None:
    study = StudyFactory.create(radiograph_count=2)
    a = RadiographFactory.create(study=study, status=Radiograph.Status.RUNNING)
    b = RadiographFactory.create(study=study, status=Radiograph.Status.RUNNING)
    _store(a, 0.2)
    study.refresh_from_db()
    assert study.state == Study.State.PROCESSING
    _store(b, 0.7)
    study.refresh_from_db()
    assert study.state == Study.State.AWAITING_REVIEW
    assert study.max_probability == pytest.approx(0.7)
