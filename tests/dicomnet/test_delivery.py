"""Results out: which studies are due a delivery, the objects sent to a PACS (a pynetdicom storage SCP
here; Orthanc in tests/e2e/test_orthanc.py), retries and the failed state, the API's delivery list and the
FHIR Bundle."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.cache import cache
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SecondaryCaptureImageStorage,
)

from radiology import services
from radiology.dicomnet import delivery, inbox, results
from radiology.dicomnet.models import DicomInstance, ResultDelivery
from radiology.fhir import study_fhir_bundle
from radiology.governance.models import GuardrailRefusal
from radiology.models import Radiograph, Review, Study
from tests.api.conftest import token_client
from tests.dicomnet import factory
from tests.factories import PredictionFactory, decline

pytestmark = pytest.mark.django_db

BOXES = [{"x0": 40.0, "y0": 50.0, "x1": 180.0, "y1": 200.0, "score": 0.66}]


@dataclass
class Pacs:
    port: int
    received: list[Dataset] = field(default_factory=list)
    status: int = 0x0000


@pytest.fixture
def pacs(settings: Any) -> Iterator[Pacs]:
    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(Comprehensive3DSRStorage)
    ae.add_supported_context(SecondaryCaptureImageStorage)
    state = Pacs(port=0)

    def store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        state.received.append(dataset)
        return state.status

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    assert server is not None  # block=False returns the running server
    state.port = server.server_address[1]
    settings.DICOM_DESTINATION = f"TESTPACS@127.0.0.1:{state.port}"
    yield state
    server.shutdown()


def predicted_study(file_due: Any) -> Study:
    study, radiographs = _dicom_study(file_due)
    PredictionFactory.create(radiograph=radiographs[0], probability=0.91, boxes=BOXES)
    PredictionFactory.create(radiograph=radiographs[1], probability=0.12, label="not_fractured", boxes=[])
    Radiograph.objects.filter(study=study).update(status=Radiograph.Status.PREDICTED)
    services.study_refresh_triage(study_id=study.pk)
    study.refresh_from_db()
    assert study.state == Study.State.AWAITING_REVIEW
    return study


def _dicom_study(file_due: Any, modalities: tuple[str, ...] = ("DX", "CR")) -> tuple[Study, list[Radiograph]]:
    study_uid = generate_uid()
    for modality in modalities:
        inbox.dicom_instance_receive(
            data=factory.radiograph(study_uid=study_uid, modality=modality, size=512),
            source=DicomInstance.Source.C_STORE,
        )
    file_due()
    study = Study.objects.get()
    return study, list(study.radiographs.order_by("position"))


def _image_groups(sr: Dataset) -> list[Any]:

    return list(factory.measurement_report(sr).get_image_measurement_groups())


def test_a_study_the_model_declined_gets_an_sr_that_says_why_and_nothing_twice(
    pacs: Pacs, file_due: Any
) -> None:
    study, radiographs = _dicom_study(file_due)
    for radiograph in radiographs:
        decline(radiograph, code="body_region", reason="The model was not validated on the skull.")
    study.refresh_from_db()
    assert study.state == Study.State.NOT_ANALYSED
    created = delivery.result_deliveries_create_due()
    assert len(created) == 1
    sent = delivery.result_delivery_send(delivery_id=created[0])
    assert sent.status == ResultDelivery.Status.SENT
    # The SR alone: no Secondary Capture, as there is nothing to draw.
    assert [str(ds.SOPClassUID) for ds in pacs.received] == [Comprehensive3DSRStorage]
    groups = _image_groups(pacs.received[0])
    assert len(groups) == 2
    for group in groups:
        assert factory.evaluation(group, results.TRIAGE_BAND) == results.NOT_ANALYSED
        reason = factory.evaluation(group, results.NOT_ANALYSED_REASON)
        assert reason.meaning == "Body region outside the model's training"
        assert not group.get_measurements()  # no probability for an image the model did not read
    # The poll again, and a shadow version's later refusal of the same image: the same content, not resent.
    assert delivery.result_deliveries_create_due() == []
    GuardrailRefusal.objects.create(
        radiograph=radiographs[0], model_version="shadow-2", code="out_of_distribution", reason="Unlike."
    )
    assert delivery.result_deliveries_create_due() == []
    assert ResultDelivery.objects.count() == 1


def test_an_image_declined_after_the_others_were_reported_is_reported_too(pacs: Pacs, file_due: Any) -> None:
    study, (dx,) = _dicom_study(file_due, ("DX",))
    PredictionFactory.create(radiograph=dx, probability=0.91, boxes=BOXES)
    Radiograph.objects.filter(pk=dx.pk).update(status=Radiograph.Status.PREDICTED)
    services.study_refresh_triage(study_id=study.pk)
    [first] = delivery.result_deliveries_create_due()
    delivery.result_delivery_send(delivery_id=first)
    assert len(_image_groups(pacs.received[0])) == 1

    # A late instance of the same study, which the model declines: the PACS is told, beside the first image.
    inbox.dicom_instance_receive(
        data=factory.radiograph(study_uid=dx.dicom_attributes["StudyInstanceUID"], modality="CR", size=512),
        source=DicomInstance.Source.C_STORE,
    )
    file_due()
    late = study.radiographs.exclude(pk=dx.pk).get()
    decline(late)
    study.refresh_from_db()
    assert study.state == Study.State.AWAITING_REVIEW
    [second] = delivery.result_deliveries_create_due()
    delivery.result_delivery_send(delivery_id=second)
    later = pacs.received[2:]  # after the first SR and its Secondary Capture
    assert sorted(str(ds.SOPClassUID) for ds in later) == sorted(
        [Comprehensive3DSRStorage, SecondaryCaptureImageStorage]
    )
    sr = next(ds for ds in later if ds.SOPClassUID == Comprehensive3DSRStorage)
    bands = [factory.evaluation(g, results.TRIAGE_BAND) for g in _image_groups(sr)]
    assert bands == [results.BANDS["fracture"], results.NOT_ANALYSED]  # in the study's order


def test_a_classified_study_is_due_one_delivery(
    pacs: Pacs, file_due: Any, deliveries_dispatched: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    study = predicted_study(file_due)
    with django_capture_on_commit_callbacks(execute=True):
        created = delivery.result_deliveries_create_due()
    assert len(created) == 1
    item = ResultDelivery.objects.get()
    assert deliveries_dispatched == [item.pk]  # sent to the broker after commit
    assert (item.study, item.kind, item.status) == (study, ResultDelivery.Kind.MODEL_RESULT, "pending")
    assert item.destination == f"C-STORE TESTPACS@127.0.0.1:{pacs.port}"
    assert delivery.result_deliveries_create_due() == []  # nothing new to report


def test_no_destination_no_delivery(settings: Any, file_due: Any) -> None:
    settings.DICOM_DESTINATION = ""
    predicted_study(file_due)
    assert delivery.result_deliveries_create_due() == []
    assert ResultDelivery.objects.count() == 0


def test_the_pacs_receives_the_sr_and_a_secondary_capture_per_image(pacs: Pacs, file_due: Any) -> None:
    study = predicted_study(file_due)
    delivery.result_deliveries_create_due()
    item = delivery.result_delivery_send(delivery_id=ResultDelivery.objects.get().pk)

    assert item.status == ResultDelivery.Status.SENT
    assert item.attempts == 1
    assert item.sent_at is not None
    kinds = sorted(str(ds.SOPClassUID) for ds in pacs.received)
    assert kinds == sorted(
        [Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SecondaryCaptureImageStorage]
    )
    sources = {r.dicom_attributes["SOPInstanceUID"] for r in study.radiographs.all()}
    sr = next(ds for ds in pacs.received if ds.SOPClassUID == Comprehensive3DSRStorage)
    assert sr.SOPInstanceUID == item.sr_sop_instance_uid
    evidence = {
        sop.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == sources
    assert all(ds.StudyInstanceUID == study.dicom_arrivals.get().study_instance_uid for ds in pacs.received)


def test_a_failed_attempt_is_retried_then_marked_failed_with_the_reason(
    pacs: Pacs, file_due: Any, settings: Any
) -> None:
    settings.DICOM_DELIVERY_MAX_ATTEMPTS = 3
    predicted_study(file_due)
    delivery.result_deliveries_create_due()
    item = ResultDelivery.objects.get()
    with socket.socket() as closed:  # a port nothing listens on: the PACS is down
        closed.bind(("127.0.0.1", 0))
        settings.DICOM_DESTINATION = f"TESTPACS@127.0.0.1:{closed.getsockname()[1]}"
    for attempt in (1, 2, 3):
        with pytest.raises(delivery.DeliveryError) as failure:
            delivery.result_delivery_send(delivery_id=item.pk)
        item = delivery.result_delivery_record_failure(delivery_id=item.pk, message=str(failure.value))
        assert item.attempts == attempt
    assert item.status == ResultDelivery.Status.FAILED
    assert "association" in item.last_error
    # The documents were built once; an admin's retry after the PACS is back sends the same ones.
    documents = item.documents
    settings.DICOM_DESTINATION = f"TESTPACS@127.0.0.1:{pacs.port}"
    delivery.result_delivery_retry(delivery_id=item.pk)
    sent = delivery.result_delivery_send(delivery_id=item.pk)
    assert sent.status == ResultDelivery.Status.SENT
    assert sent.documents == documents
    assert sorted(str(ds.SOPInstanceUID) for ds in pacs.received) == sorted(
        d["sop_instance_uid"] for d in documents
    )


def test_a_refusing_pacs_is_a_failed_attempt(pacs: Pacs, file_due: Any) -> None:
    pacs.status = 0xA700
    predicted_study(file_due)
    delivery.result_deliveries_create_due()
    with pytest.raises(delivery.DeliveryError, match="0xA700"):
        delivery.result_delivery_send(delivery_id=ResultDelivery.objects.get().pk)
    assert ResultDelivery.objects.get().status == ResultDelivery.Status.PENDING


def test_the_final_call_follows_the_review_and_names_the_first_sr(
    pacs: Pacs, file_due: Any, clinician: Any
) -> None:
    study = predicted_study(file_due)
    delivery.result_deliveries_create_due()
    first = delivery.result_delivery_send(delivery_id=ResultDelivery.objects.get().pk)
    for radiograph in study.radiographs.all():
        prediction = radiograph.predictions.get()
        Review.objects.create(
            radiograph=radiograph,
            prediction=prediction,
            reviewer=clinician,
            decision="override" if prediction.label == "fractured" else "confirm",
            final_label="not_fractured",
            reason_code="false_alarm" if prediction.label == "fractured" else "",
            reason_text="Nutrient canal." if prediction.label == "fractured" else "",
        )
    services.study_refresh_triage(study_id=study.pk)
    created = delivery.result_deliveries_create_due()
    final = ResultDelivery.objects.get(pk__in=created)
    assert final.kind == ResultDelivery.Kind.FINAL_CALL
    sent = delivery.result_delivery_send(delivery_id=final.pk)
    assert sent.status == ResultDelivery.Status.SENT
    report = dcmread(io.BytesIO(_last_bytes(pacs)))
    assert report.VerificationFlag == "VERIFIED"
    predecessor = report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.sr_sop_instance_uid
    # The reviewer is named as the verifying observer and as the person observer of the content.
    assert (
        str(report.VerifyingObserverSequence[0].VerifyingObserverName) == "dr.ada^"
    )  # one component, on purpose
    observer = next(
        item
        for item in report.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Person Observer Name"
    )
    assert str(observer.PersonName) == str(report.VerifyingObserverSequence[0].VerifyingObserverName)


def _last_bytes(pacs: Pacs) -> bytes:
    buffer = io.BytesIO()
    pacs.received[-1].save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_api_shows_each_delivery_and_its_status(pacs: Pacs, file_due: Any, clinician: Any) -> None:
    cache.clear()
    study = predicted_study(file_due)
    delivery.result_deliveries_create_due()
    client = token_client(clinician)
    pending = client.get(f"/api/v1/studies/{study.pk}/deliveries").json()
    assert [(d["kind"], d["status"], d["attempts"]) for d in pending] == [("model_result", "pending", 0)]
    delivery.result_delivery_send(delivery_id=pending[0]["id"])
    sent = client.get(f"/api/v1/studies/{study.pk}/deliveries").json()[0]
    assert sent["status"] == "sent"
    assert [d["role"] for d in sent["documents"]] == ["sr", "sc", "sc"]
    assert sent["sr_sop_instance_uid"] == sent["documents"][0]["sop_instance_uid"]
    assert "file" not in sent["documents"][0]  # storage names stay inside


def test_the_fhir_bundle_links_the_report_to_the_imaging_study(file_due: Any, clinician: Any) -> None:
    cache.clear()
    study = predicted_study(file_due)
    response = token_client(clinician).get(f"/api/v1/studies/{study.pk}/fhir")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    bundle = response.json()
    resources = [entry["resource"] for entry in bundle["entry"]]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    imaging = by_type["ImagingStudy"][0]
    study_uid = study.dicom_arrivals.get().study_instance_uid
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"} in imaging["identifier"]
    assert sum(len(s["instance"]) for s in imaging["series"]) == 2
    report = by_type["DiagnosticReport"][0]
    assert report["status"] == "preliminary"
    study_ref = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy")
    assert report["imagingStudy"] == [{"reference": study_ref}]
    observations = by_type["Observation"]
    assert len(observations) == 6  # finding, probability and band for each of the two radiographs
    assert len(report["result"]) == 6
    probabilities = sorted(o["valueQuantity"]["value"] for o in observations if "valueQuantity" in o)
    assert probabilities == [0.12, 0.91]
    bands = sorted(
        o["valueCodeableConcept"]["coding"][0]["code"]
        for o in observations
        if o["code"]["coding"][0]["code"] == "triage-band"
    )
    assert bands == ["fracture", "no_fracture"]
    assert all(o["derivedFrom"] == [{"reference": study_ref}] for o in observations)


def test_the_fhir_bundle_carries_the_reviewers_final_call(file_due: Any, clinician: Any) -> None:
    study = predicted_study(file_due)
    radiograph = study.radiographs.order_by("position").first()
    assert radiograph is not None
    Review.objects.create(
        radiograph=radiograph,
        prediction=radiograph.predictions.get(),
        reviewer=clinician,
        decision="override",
        final_label="not_fractured",
        reason_code="false_alarm",
    )
    bundle = study_fhir_bundle(study=study)
    finals = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation" and e["resource"]["status"] == "final"
    ]
    assert len(finals) == 1
    final = finals[0]
    assert final["valueCodeableConcept"]["coding"][0]["code"] == "2667000"  # absent
    assert final["performer"] == [{"display": clinician.get_username()}]
    codes = [c["valueCodeableConcept"]["coding"][0]["code"] for c in final["component"]]
    assert codes == ["overridden", "false_alarm"]
