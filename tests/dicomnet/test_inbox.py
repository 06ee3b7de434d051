"""Receiving DICOM instances and filing them into studies (the service C-STORE and STOW-RS share)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from pydicom.uid import CTImageStorage, generate_uid

from radiology import services
from radiology.dicomnet import inbox
from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.models import AuditEvent, BodyRegion, Patient, Radiograph, Study
from tests.dicomnet import factory
from tests.dicomnet.conftest import later

pytestmark = pytest.mark.django_db

C_STORE = DicomInstance.Source.C_STORE


def receive(data: bytes, **kwargs: Any) -> inbox.ReceiveOutcome:
    return inbox.dicom_instance_receive(data=data, source=C_STORE, calling_ae_title="MODALITY", **kwargs)


def inbox_files() -> list[Path]:
    folder = Path(django_settings.MEDIA_ROOT) / "dicom-inbox"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_an_instance_is_kept_in_its_study_arrival_until_the_quiet_period_ends(
    quiet: dt.timedelta, dispatched: Any, file_due: Any
) -> None:
    study_uid = generate_uid()
    first = receive(factory.radiograph(study_uid=study_uid))
    second = receive(factory.radiograph(study_uid=study_uid, syntax="jpeg2000_lossless"))

    assert (first.outcome, second.outcome) == ("stored", "stored")
    arrival = DicomArrival.objects.get(study_instance_uid=study_uid)
    assert arrival.state == DicomArrival.State.OPEN
    assert arrival.instances.count() == 2
    assert len(inbox_files()) == 2
    # Not quiet yet: nothing is filed, no study exists, nothing is classified.
    assert inbox.dicom_arrivals_file_due() == []
    assert Study.objects.count() == 0
    assert dispatched.sent == []


def test_a_quiet_arrival_is_filed_as_one_study_and_classified(
    quiet: dt.timedelta, dispatched: Any, file_due: Any
) -> None:
    study_uid = generate_uid()
    for modality in ("DX", "CR"):
        receive(factory.radiograph(study_uid=study_uid, modality=modality, accession="ACC-QUIET"))

    filed = file_due()

    arrival = DicomArrival.objects.get(study_instance_uid=study_uid)
    assert filed == [arrival.pk]
    assert arrival.state == DicomArrival.State.FILED
    study = arrival.study
    assert study is not None
    assert study.accession_number == "ACC-QUIET"
    assert study.body_region == BodyRegion.WRIST  # from BodyPartExamined
    assert study.patient.mrn == "DCM-7001"
    assert study.patient.name == "Jane Doe"  # Doe^Jane over C-STORE, as the upload form files it
    assert study.uploaded_by.username == django_settings.DICOM_SYSTEM_USERNAME
    radiographs = list(study.radiographs.order_by("position"))
    assert [r.dicom_attributes["Modality"] for r in radiographs] == ["DX", "CR"]
    assert all(r.status == Radiograph.Status.QUEUED for r in radiographs)
    assert sorted(dispatched.sent) == sorted(r.pk for r in radiographs)
    assert all(i.state == DicomInstance.State.FILED and i.radiograph_id for i in arrival.instances.all())
    # The inbox copies are gone once the radiographs hold theirs.
    assert inbox_files() == []
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.STUDY_UPLOADED, target_id=str(study.pk)
    ).exists()


def test_a_resent_instance_creates_nothing(quiet: dt.timedelta, dispatched: Any, file_due: Any) -> None:
    data = factory.radiograph()
    assert receive(data).outcome == "stored"
    assert receive(data).outcome == "duplicate"
    file_due()
    # Sent again after filing, even in another transfer syntax: still the same SOP instance.
    uid = DicomInstance.objects.get().sop_instance_uid
    again = factory.radiograph(sop_uid=uid, syntax="rle")
    assert receive(again).outcome == "duplicate"
    assert file_due(later(30)) == []
    assert (Study.objects.count(), Radiograph.objects.count(), DicomInstance.objects.count()) == (1, 1, 1)
    assert len(dispatched.sent) == 1


def test_a_late_instance_joins_the_filed_study(quiet: dt.timedelta, dispatched: Any, file_due: Any) -> None:
    study_uid = generate_uid()
    receive(factory.radiograph(study_uid=study_uid))
    file_due()
    study = Study.objects.get()

    receive(factory.radiograph(study_uid=study_uid, modality="CR"))
    arrival = DicomArrival.objects.get()
    assert arrival.state == DicomArrival.State.OPEN
    file_due()

    arrival.refresh_from_db()
    assert arrival.state == DicomArrival.State.FILED
    assert Study.objects.count() == 1
    assert [r.position for r in study.radiographs.order_by("position")] == [0, 1]
    study.refresh_from_db()
    assert study.radiograph_count == 2
    assert len(dispatched.sent) == 2


def test_an_instance_uploaded_through_the_form_is_not_filed_twice(
    quiet: dt.timedelta, clinician: Any, file_due: Any
) -> None:
    study_uid = generate_uid()
    data = factory.radiograph(study_uid=study_uid, accession="ACC-FORM")
    upload = services.study_create(
        uploaded_by=clinician, details=services.StudyDetails(), files=[services.UploadedImage("a.dcm", data)]
    )
    assert upload.study is not None

    assert receive(data).outcome == "duplicate"  # the upload recorded the instance: nothing to keep
    receive(factory.radiograph(study_uid=study_uid, accession="ACC-FORM", modality="CR"))
    file_due()

    assert Study.objects.count() == 1
    assert upload.study.radiographs.count() == 2  # the CR joined; the DX already there was recognised
    instance = DicomInstance.objects.get(
        sop_instance_uid=upload.accepted[0].dicom_attributes["SOPInstanceUID"]
    )
    assert (instance.radiograph, instance.source) == (upload.accepted[0], DicomInstance.Source.UPLOAD)


def test_an_arrival_that_cannot_be_filed_says_why_and_creates_nothing(
    quiet: dt.timedelta, dispatched: Any, file_due: Any
) -> None:
    Patient.objects.create(mrn="DCM-7001", name="Somebody Else")
    receive(factory.radiograph())

    file_due()

    arrival = DicomArrival.objects.get()
    assert arrival.state == DicomArrival.State.FAILED
    assert "different name" in arrival.failure_message
    assert (Study.objects.count(), Radiograph.objects.count()) == (0, 0)
    assert DicomInstance.objects.get().state == DicomInstance.State.RECEIVED  # kept for a retry
    assert dispatched.sent == []


def test_an_unmapped_body_part_files_the_study_under_other(quiet: dt.timedelta, file_due: Any) -> None:
    receive(factory.radiograph(body_part="SKULL"))
    file_due()
    assert Study.objects.get().body_region == BodyRegion.OTHER


def test_instances_without_an_accession_number_use_the_study_uid(quiet: dt.timedelta, file_due: Any) -> None:
    study_uid = generate_uid()
    receive(factory.radiograph(study_uid=study_uid, accession=""))
    file_due()
    assert Study.objects.get().accession_number == study_uid


@pytest.mark.parametrize(
    ("data", "reason", "says"),
    [
        (
            lambda: factory.radiograph(sop_class=CTImageStorage, modality="CT"),
            "sop_class_not_supported",
            "SOP class",
        ),
        (lambda: factory.radiograph(modality="MR"), "not_a_radiograph", "Modality MR"),
        (lambda: factory.radiograph(patient=factory.Patient(mrn="")), "missing_attribute", "PatientID"),
        (lambda: b"not dicom at all" * 100, "unreadable", "damaged"),
    ],
)
def test_it_refuses_what_is_not_a_readable_radiograph(data: Any, reason: str, says: str) -> None:
    outcome = receive(data())
    assert outcome.outcome == "refused"
    assert outcome.reason == reason
    assert says in outcome.message
    assert (DicomArrival.objects.count(), DicomInstance.objects.count()) == (0, 0)
    assert inbox_files() == []


def test_it_refuses_an_instance_over_the_size_limit(settings: Any) -> None:
    settings.DICOM_MAX_INSTANCE_BYTES = 50_000
    outcome = receive(factory.radiograph())
    assert (outcome.outcome, outcome.reason) == ("refused", "file_too_large")
    assert DicomInstance.objects.count() == 0


def test_a_truncated_pixel_stream_is_refused_when_received(quiet: dt.timedelta) -> None:
    data = factory.radiograph(syntax="jpeg_ls_lossless")
    outcome = receive(data[: len(data) - 5000])
    assert (outcome.outcome, outcome.reason) == ("refused", "unreadable")
    assert DicomInstance.objects.count() == 0


def test_a_storage_failure_leaves_no_row_and_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("django.core.files.storage.FileSystemStorage._save", refuse)
    outcome = receive(factory.radiograph())
    assert (outcome.outcome, outcome.reason) == ("refused", "storage_unavailable")
    assert (DicomArrival.objects.count(), DicomInstance.objects.count()) == (0, 0)


def test_a_failure_after_the_file_is_written_removes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    original = DicomInstance.save

    def fail(self: DicomInstance, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise RuntimeError("database went away")

    monkeypatch.setattr(DicomInstance, "save", fail)
    with pytest.raises(RuntimeError):
        receive(factory.radiograph())
    assert (DicomArrival.objects.count(), DicomInstance.objects.count()) == (0, 0)
    assert inbox_files() == []


def test_filing_an_arrival_twice_files_it_once(
    quiet: dt.timedelta, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    receive(factory.radiograph())
    arrival = DicomArrival.objects.get()
    quiet_since = timezone.now() + dt.timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox.dicom_arrival_file(arrival_id=arrival.pk, quiet_since=quiet_since) is True
        assert inbox.dicom_arrival_file(arrival_id=arrival.pk, quiet_since=quiet_since) is False
    assert Study.objects.count() == 1
    assert len(dispatched.sent) == 1
