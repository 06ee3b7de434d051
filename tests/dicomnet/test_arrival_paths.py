"""Every DICOM arrival path shares one idempotency by SOPInstanceUID: C-STORE, STOW-RS, the upload form and
the upload API. An instance received by one path and sent again by another creates no second radiograph and
no second prediction: a network path answers "stored" and does nothing; an upload refuses that file, naming
the SOPInstanceUID and the study that already holds it, and writes nothing for it."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from pydicom import dcmread
from pydicom.uid import generate_uid

from radiology import services
from radiology.dicomnet import inbox
from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.models import AuditEvent, Prediction, Radiograph, Study
from tests.api.conftest import token_client
from tests.dicomnet import factory
from tests.dicomnet.test_stow import stow, uids
from tests.factories import PredictionFactory

pytestmark = pytest.mark.django_db

NETWORK = ["c-store", "stow-rs"]
UPLOADS = ["form", "api"]


def _stored_files() -> list[str]:
    found: list[str] = []
    for folder in ("radiographs", "dicom-inbox"):
        if default_storage.exists(folder):
            found += default_storage.listdir(folder)[1]
    return sorted(found)


def send_over_network(path: str, data: bytes, clinician: Any) -> bool:
    """True when the sender is told the instance is stored (new or already held)."""
    if path == "c-store":
        outcome = inbox.dicom_instance_receive(
            data=data, source=DicomInstance.Source.C_STORE, calling_ae_title="MODALITY"
        )
        return outcome.ok
    response = stow(token_client(clinician), data)
    return response.status_code == 200 and len(uids(response.json()["00081199"])) == 1


def upload(path: str, clinician: Any, *files: tuple[str, bytes], **fields: str) -> tuple[int, str]:
    """Upload through the web form or the API; (HTTP status, the page or response text)."""
    if path == "form":
        client = _web_client(clinician)
        response = client.post(
            "/studies/new/", {**fields, "files": [ContentFile(data, name=name) for name, data in files]}
        )
    else:
        response = token_client(clinician).post(
            "/api/v1/studies",
            {**fields, "files": [ContentFile(data, name=name) for name, data in files]},
            format="multipart",
        )
    return response.status_code, response.content.decode()


def _web_client(user: Any) -> Any:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def _network_study(path: str, clinician: Any, file_due: Any, data: bytes) -> Radiograph:
    """The instance received by `path`, filed into its study and classified once."""
    assert send_over_network(path, data, clinician)
    file_due()
    radiograph = Radiograph.objects.get()
    PredictionFactory.create(radiograph=radiograph)
    return radiograph


@pytest.mark.parametrize("network", NETWORK)
@pytest.mark.parametrize("upload_path", UPLOADS)
def test_an_upload_of_an_instance_received_over_the_network_is_refused_naming_it(
    network: str, upload_path: str, clinician: Any, quiet: dt.timedelta, file_due: Any
) -> None:
    data = factory.radiograph(accession="NET-1")
    uid = factory_uid(data)
    radiograph = _network_study(network, clinician, file_due, data)
    files_before = _stored_files()

    status, text = upload(upload_path, clinician, ("again.dcm", data))

    assert status in (400, 422)
    assert uid in text
    assert "NET-1" in text and f"study #{radiograph.study_id}" in text
    assert "already received" in text
    assert Study.objects.count() == 1
    assert Radiograph.objects.count() == 1
    assert Prediction.objects.count() == 1
    assert DicomInstance.objects.get().source == network
    assert _stored_files() == files_before  # nothing written, nothing left behind
    refusal = AuditEvent.objects.get(action=AuditEvent.Action.FILE_REJECTED)
    assert refusal.details["code"] == "already_received"


@pytest.mark.parametrize("upload_path", UPLOADS)
@pytest.mark.parametrize("network", NETWORK)
def test_an_uploaded_instance_sent_over_the_network_creates_nothing(
    upload_path: str, network: str, clinician: Any, quiet: dt.timedelta, file_due: Any
) -> None:
    data = factory.radiograph(accession="UP-1")
    status, text = upload(upload_path, clinician, ("first.dcm", data))
    assert status in (201, 302), text
    radiograph = Radiograph.objects.get()
    instance = DicomInstance.objects.get()
    # The upload recorded the same per-instance row the network paths keep.
    assert (instance.source, instance.state, instance.radiograph) == ("upload", "filed", radiograph)
    assert instance.sop_instance_uid == factory_uid(data)
    assert instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1.1"
    assert instance.arrival.study == radiograph.study
    assert instance.arrival.state == DicomArrival.State.FILED
    PredictionFactory.create(radiograph=radiograph)

    assert send_over_network(network, data, clinician)  # the sender is told "stored"
    assert send_over_network(network, data, clinician)
    file_due()

    assert DicomInstance.objects.count() == 1
    assert Study.objects.count() == 1
    assert Radiograph.objects.count() == 1
    assert Prediction.objects.count() == 1
    assert DicomArrival.objects.get().state == DicomArrival.State.FILED


@pytest.mark.parametrize(("first", "second"), [("form", "api"), ("api", "form"), ("api", "api")])
def test_an_instance_uploaded_twice_is_refused_the_second_time(
    first: str, second: str, clinician: Any
) -> None:
    data = factory.radiograph(accession="UP-2")
    assert upload(first, clinician, ("a.dcm", data))[0] in (201, 302)
    status, text = upload(second, clinician, ("renamed.dcm", data))
    assert status in (400, 422)
    assert factory_uid(data) in text and "in an earlier upload" in text
    assert Radiograph.objects.count() == 1
    assert DicomInstance.objects.count() == 1


@pytest.mark.parametrize(("first", "second"), [("c-store", "stow-rs"), ("stow-rs", "c-store")])
def test_the_two_network_paths_share_the_instance(
    first: str, second: str, clinician: Any, quiet: dt.timedelta, file_due: Any
) -> None:
    data = factory.radiograph()
    assert send_over_network(first, data, clinician)
    file_due()
    assert send_over_network(second, data, clinician)
    file_due()
    assert DicomInstance.objects.get().source == first
    assert Radiograph.objects.count() == 1


def test_an_upload_of_an_instance_waiting_to_be_filed_is_refused(
    clinician: Any, quiet: dt.timedelta, file_due: Any
) -> None:
    study_uid = generate_uid()
    data = factory.radiograph(study_uid=study_uid)
    assert send_over_network("c-store", data, clinician)  # received; the quiet period has not ended

    status, text = upload("api", clinician, ("early.dcm", data))
    assert status == 422
    assert f"will be filed with its study (Study Instance UID {study_uid})" in text
    assert not Radiograph.objects.exists()

    file_due()
    assert Radiograph.objects.count() == 1
    assert DicomInstance.objects.get().state == DicomInstance.State.FILED


def test_an_upload_keeps_the_new_instance_and_names_the_known_one(
    clinician: Any, quiet: dt.timedelta, file_due: Any
) -> None:
    study_uid = generate_uid()
    known = factory.radiograph(study_uid=study_uid, accession="NET-3")
    new = factory.radiograph(study_uid=study_uid, accession="NET-3", modality="CR")
    network_radiograph = _network_study("stow-rs", clinician, file_due, known)

    status, text = upload(
        "api",
        clinician,
        ("known.dcm", known),
        ("new.dcm", new),
        accession_number="UPLOAD-3",
        body_region="wrist",
    )
    assert status == 201, text
    assert Study.objects.count() == 2
    rejected = {r["file"]: r for r in json.loads(text)["rejected"]}
    assert set(rejected) == {"known.dcm"}
    assert rejected["known.dcm"]["code"] == "already_received"
    uploaded = Study.objects.get(accession_number="UPLOAD-3")
    assert [r.dicom_attributes["SOPInstanceUID"] for r in uploaded.radiographs.all()] == [factory_uid(new)]
    # The new instance is recorded under the same StudyInstanceUID, so the network will not add it again.
    assert (
        DicomInstance.objects.get(sop_instance_uid=factory_uid(new)).arrival.study_instance_uid == study_uid
    )
    assert send_over_network("c-store", new, clinician)
    file_due()
    assert network_radiograph.study.radiographs.count() == 1
    assert Radiograph.objects.count() == 2


def test_the_same_instance_twice_in_one_upload_is_kept_once(clinician: Any) -> None:
    data = factory.radiograph(accession="UP-4")
    # The same SOP Instance UID re-encoded (another transfer syntax): different bytes, one instance.
    sop_uid = factory_uid(data)
    other = factory.radiograph(accession="UP-4", sop_uid=sop_uid, syntax="rle")
    status, text = upload("api", clinician, ("a.dcm", data), ("b.dcm", other))
    assert status == 201, text
    assert Radiograph.objects.count() == 1
    assert "same DICOM instance" in text


def test_a_network_instance_that_wins_the_race_rolls_the_upload_back(
    clinician: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance arrives over C-STORE after the upload's check and before its insert: the upload
    fails whole, saying so, and leaves no radiograph and no file."""
    data = factory.radiograph(accession="RACE-1")
    real_refuse = services.instances.refuse_known

    def check_then_arrive(*args: Any, **kwargs: Any) -> Any:
        kept = real_refuse(*args, **kwargs)
        assert (
            inbox.dicom_instance_receive(data=data, source=DicomInstance.Source.C_STORE).outcome == "stored"
        )
        return kept

    monkeypatch.setattr(services.instances, "refuse_known", check_then_arrive)
    radiograph_files = _radiograph_files()
    with pytest.raises(services.ServiceError) as refused:
        services.study_create(
            uploaded_by=clinician,
            details=services.StudyDetails(),
            files=[services.UploadedImage("race.dcm", data)],
        )
    assert refused.value.code == "already_received"
    assert factory_uid(data) in refused.value.message
    assert not Radiograph.objects.exists()
    assert not Study.objects.exists()
    assert DicomInstance.objects.get().source == "c-store"  # the network's copy, waiting to be filed
    assert _radiograph_files() == radiograph_files  # the upload's image file was removed again


def _radiograph_files() -> list[str]:
    return default_storage.listdir("radiographs")[1] if default_storage.exists("radiographs") else []


def factory_uid(data: bytes) -> str:
    return str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
