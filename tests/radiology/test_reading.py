"""The reading workflow's services: reasons by direction, confirming a study, blinded reads, adjudication,
the "being read by" marker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from radiology import services
from radiology.models import Adjudication, AuditEvent, Radiograph, Review, Study, UnaidedRead
from radiology.services import ServiceError
from tests.factories import ClinicianFactory, PredictionFactory, RadiographFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _study(*probabilities: float) -> Study:
    """A study awaiting review, one predicted radiograph per probability (bands from 0.3 / 0.7)."""
    study = StudyFactory.create(radiograph_count=len(probabilities))
    for position, p in enumerate(probabilities):
        radiograph = RadiographFactory.create(
            study=study, position=position, status=Radiograph.Status.PREDICTED
        )
        PredictionFactory.create(
            radiograph=radiograph, probability=p, label="fractured" if p >= 0.5 else "not_fractured"
        )
    services.study_refresh_triage(study_id=study.pk)
    study.refresh_from_db()
    return study


def _images(study: Study) -> list[Radiograph]:
    return list(study.radiographs.order_by("position"))


@pytest.mark.parametrize(
    ("model_p", "final", "reason"),
    [
        (0.9, "not_fractured", "missed_fracture"),  # the example: the model said fractured
        (0.1, "fractured", "false_alarm"),
        (0.1, "fractured", "old_fracture"),
    ],
)
def test_an_override_reason_that_contradicts_its_direction_is_refused(
    clinician: Any, model_p: float, final: str, reason: str
) -> None:
    (radiograph,) = _images(_study(model_p))
    with pytest.raises(ServiceError) as refused:
        services.review_submit(
            radiograph_id=radiograph.pk,
            reviewer=clinician,
            decision="override",
            final_label=final,
            reason_code=reason,
        )
    assert refused.value.code == "reason_contradicts_label"
    assert refused.value.field == "reason_code"
    assert not Review.objects.exists()


def test_a_reason_that_fits_its_direction_is_recorded(clinician: Any) -> None:
    (radiograph,) = _images(_study(0.2))
    review = services.review_submit(
        radiograph_id=radiograph.pk,
        reviewer=clinician,
        decision="override",
        final_label="fractured",
        reason_code="missed_fracture",
    )
    assert (review.final_label, review.reason_code) == ("fractured", "missed_fracture")


def test_confirming_a_study_confirms_every_image_still_awaiting_review(clinician: Any) -> None:
    study = _study(0.9, 0.5, 0.1)
    first, second, third = _images(study)
    services.review_submit(
        radiograph_id=second.pk,
        reviewer=clinician,
        decision="override",
        final_label="not_fractured",
        reason_code="hardware",
    )
    reviews = services.study_confirm(study_id=study.pk, reviewer=clinician)
    assert {r.radiograph_id for r in reviews} == {first.pk, third.pk}
    assert {(r.radiograph_id, r.decision, r.final_label) for r in Review.objects.all()} == {
        (first.pk, "confirm", "fractured"),
        (second.pk, "override", "not_fractured"),
        (third.pk, "confirm", "not_fractured"),
    }
    study.refresh_from_db()
    assert study.state == Study.State.REVIEWED
    events = AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW_SUBMITTED, details__study_confirm=True)
    assert events.count() == 2
    with pytest.raises(ServiceError) as again:
        services.study_confirm(study_id=study.pk, reviewer=clinician)
    assert again.value.code == "nothing_to_confirm"


def test_a_blinded_reader_must_record_an_unaided_call_first(clinician: Any, settings: Any) -> None:
    settings.BLINDED_READ_DEFAULT = True
    study = _study(0.9, 0.8)
    first, second = _images(study)
    with pytest.raises(ServiceError) as refused:
        services.study_confirm(study_id=study.pk, reviewer=clinician)
    assert refused.value.code == "unaided_read_required"
    assert not Review.objects.exists()

    services.unaided_read_record(
        radiograph_ids=[first.pk, second.pk], reader=clinician, label="not_fractured"
    )
    services.study_confirm(study_id=study.pk, reviewer=clinician)
    # All three calls are stored: the unaided one, the model's (the prediction) and the final one.
    assert (
        sorted(Review.objects.values_list("unaided_label", "prediction__label", "final_label"))
        == [("not_fractured", "fractured", "fractured")] * 2
    )
    # The reader changed their mind (and the model was confident): both go to a second reader.
    assert Adjudication.objects.filter(state="open").count() == 2
    assert AuditEvent.objects.filter(action=AuditEvent.Action.UNAIDED_READ).count() == 1


def test_the_site_default_yields_to_the_readers_own_choice(clinician: Any, settings: Any) -> None:
    settings.BLINDED_READ_DEFAULT = True
    assert services.reader_is_blinded(clinician)
    services.reader_setting_update(user=clinician, blinded=False)
    assert not services.reader_is_blinded(clinician)
    services.reader_setting_update(user=clinician, blinded=None)
    assert services.reader_is_blinded(clinician)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.READER_SETTING).count() == 2


def test_an_unaided_call_is_refused_once_the_reader_has_seen_the_model(clinician: Any) -> None:
    (radiograph,) = _images(_study(0.9))
    services.review_submit(radiograph_id=radiograph.pk, reviewer=clinician, decision="confirm")
    with pytest.raises(ServiceError) as refused:
        services.unaided_read_record(radiograph_ids=[radiograph.pk], reader=clinician, label="fractured")
    assert refused.value.code == "already_seen"
    assert not UnaidedRead.objects.exists()


def test_an_unaided_call_is_never_changed(clinician: Any) -> None:
    (radiograph,) = _images(_study(0.9))
    services.unaided_read_record(radiograph_ids=[radiograph.pk], reader=clinician, label="fractured")
    with pytest.raises(ServiceError) as refused:
        services.unaided_read_record(radiograph_ids=[radiograph.pk], reader=clinician, label="not_fractured")
    assert refused.value.code == "already_recorded"
    assert list(UnaidedRead.objects.values_list("label", flat=True)) == ["fractured"]


@pytest.mark.parametrize(
    ("model_p", "final", "opens"),
    [
        (0.9, "not_fractured", True),  # against a confident Fracture band
        (0.1, "fractured", True),  # against a confident No fracture band
        (0.5, "not_fractured", False),  # Doubt is not confident: no second reader needed
        (0.9, "fractured", False),
    ],
)
def test_a_final_call_against_a_confident_band_goes_to_a_second_reader(
    clinician: Any, model_p: float, final: str, opens: bool
) -> None:
    (radiograph,) = _images(_study(model_p))
    model_label = "fractured" if model_p >= 0.5 else "not_fractured"
    if final == model_label:
        services.review_submit(radiograph_id=radiograph.pk, reviewer=clinician, decision="confirm")
    else:
        services.review_submit(
            radiograph_id=radiograph.pk,
            reviewer=clinician,
            decision="override",
            final_label=final,
            reason_code="image_quality",
        )
    assert Adjudication.objects.filter(radiograph=radiograph, trigger="model_disagrees").exists() is opens


def test_the_first_reader_cannot_adjudicate_their_own_case_and_a_decision_is_locked(clinician: Any) -> None:
    (radiograph,) = _images(_study(0.9))
    services.review_submit(
        radiograph_id=radiograph.pk,
        reviewer=clinician,
        decision="override",
        final_label="not_fractured",
        reason_code="false_alarm",
    )
    adjudication = Adjudication.objects.get()
    with pytest.raises(ServiceError) as own:
        services.adjudication_decide(
            adjudication_id=adjudication.pk, adjudicator=clinician, label="fractured"
        )
    assert own.value.code == "own_case"

    colleague = ClinicianFactory.create(username="dr.grace")
    services.adjudication_decide(
        adjudication_id=adjudication.pk,
        adjudicator=colleague,
        label="fractured",
        notes="Subtle cortical step.",
    )
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.label, adjudication.adjudicator) == (
        "decided",
        "fractured",
        colleague,
    )
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_DECIDED).count() == 1
    with pytest.raises(ServiceError) as locked:
        services.adjudication_decide(
            adjudication_id=adjudication.pk, adjudicator=colleague, label="not_fractured"
        )
    assert locked.value.code == "already_adjudicated"
    with pytest.raises(ServiceError) as review_locked:
        services.review_submit(radiograph_id=radiograph.pk, reviewer=colleague, decision="confirm")
    assert review_locked.value.code == "adjudicated"
    assert Review.objects.count() == 1


def test_the_reading_marker_holds_until_it_expires(clinician: Any) -> None:
    study = _study(0.9)
    colleague = ClinicianFactory.create(username="dr.grace")
    now = timezone.now()
    assert services.study_mark_reading(study_id=study.pk, reader=clinician, now=now)
    assert not services.study_mark_reading(study_id=study.pk, reader=colleague, now=now)
    later = now + dt.timedelta(seconds=301)
    assert services.study_mark_reading(study_id=study.pk, reader=colleague, now=later)
    study.refresh_from_db()
    assert study.reading_by == colleague
    services.study_release_reading(study_id=study.pk, reader=clinician)  # not theirs any more: no effect
    study.refresh_from_db()
    assert study.reading_by == colleague


def test_an_oversized_upload_is_refused_with_its_real_size(clinician: Any, settings: Any) -> None:
    """Only the first bytes past the limit are read, yet the message states the file's real size."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.UPLOAD_MAX_FILE_BYTES = 2 * 1024 * 1024
    upload = SimpleUploadedFile("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024))
    image = services.UploadedImage.from_upload(upload)
    assert len(image.data) == settings.UPLOAD_MAX_FILE_BYTES + 1
    result = services.study_create(
        uploaded_by=clinician,
        details=services.StudyDetails(
            mrn="M1", patient_name="A B", accession_number="A1", body_region="hand"
        ),
        files=[image],
    )
    assert result.study is None
    (refusal,) = result.rejected
    assert refusal.code == "file_too_large"
    assert refusal.message == "The file is 3.0 MB; the limit is 2.0 MB per file."


def test_a_typed_patient_that_differs_from_the_dicom_header_needs_confirmation(clinician: Any) -> None:
    from tests.conftest import fixture_bytes

    dicom = services.UploadedImage(
        "pa.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm")
    )  # DCM-0001, Doe^Jane
    typed: dict[str, Any] = {
        "mrn": "MRN-77",
        "patient_name": "Jane Doe",
        "accession_number": "ACC-WP-1",
        "body_region": "hand",
    }
    with pytest.raises(ServiceError) as refused:
        services.study_create(uploaded_by=clinician, details=services.StudyDetails(**typed), files=[dicom])
    assert refused.value.code == "patient_details_differ"
    assert "MRN typed “MRN-77”, DICOM file says “DCM-0001”" in refused.value.message
    assert "Name" not in refused.value.message  # "Jane Doe" is Doe^Jane: the same name
    assert not Study.objects.exists()

    result = services.study_create(
        uploaded_by=clinician,
        details=services.StudyDetails(**typed, confirm_patient_mismatch=True),
        files=[dicom],
    )
    assert result.study is not None and result.study.patient.mrn == "MRN-77"
    # The file keeps its own header, and the confirmed difference is audited with both values.
    assert result.accepted[0].dicom_attributes["PatientID"] == "DCM-0001"
    event = AuditEvent.objects.get(action=AuditEvent.Action.PATIENT_DETAILS_DIFFER)
    assert event.details["differences"][0] | {"file": "pa.dcm"} == {
        "field": "mrn",
        "field_label": "MRN",
        "typed": "MRN-77",
        "dicom": "DCM-0001",
        "file": "pa.dcm",
    }
