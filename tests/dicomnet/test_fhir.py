"""The FHIR Bundle is strict FHIR R4 (4.0.1): read back with fhirclient's R4 models independently of the
application's own validator, every reference resolved inside the Bundle, and the ImagingStudy linked to
the DICOM study by its StudyInstanceUID; and the validator refuses what R4 does not allow."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from fhirclient.models.bundle import Bundle
from fhirclient.models.diagnosticreport import DiagnosticReport
from fhirclient.models.fhirabstractbase import FHIRAbstractBase
from fhirclient.models.fhirreference import FHIRReference
from fhirclient.models.imagingstudy import ImagingStudy
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.models.resource import Resource

from radiology.fhir import study_fhir_bundle
from radiology.fhir_validation import FHIR_VERSION, FhirValidationError, validate_bundle
from radiology.models import Review, Study
from radiology.services import study_read_without_model, study_refresh_triage
from tests.api.conftest import token_client
from tests.dicomnet.test_delivery import predicted_study
from tests.factories import RadiographFactory, StudyFactory, decline

pytestmark = pytest.mark.django_db

# What each reference of this Bundle must resolve to, by (resource type, element).
EXPECTED_TARGETS = {
    ("ImagingStudy", "subject"): Patient,
    ("Observation", "subject"): Patient,
    ("Observation", "derivedFrom"): ImagingStudy,
    ("DiagnosticReport", "subject"): Patient,
    ("DiagnosticReport", "result"): Observation,
    ("DiagnosticReport", "imagingStudy"): ImagingStudy,
}


def test_the_models_are_fhir_r4_4_0_1() -> None:
    assert FHIR_VERSION == "4.0.1"
    for model in (Bundle, Patient, ImagingStudy, Observation, DiagnosticReport):
        header = Path(inspect.getsourcefile(model) or "").read_text().splitlines()[0]
        assert header.startswith("# Generated from FHIR 4.0.1-"), (model, header)


def _references(element: FHIRAbstractBase, path: str = "") -> Iterator[tuple[str, FHIRReference]]:
    for name, jsname, _type, is_list, _of_many, _required in element.elementProperties():
        value = getattr(element, name)
        for item in (value or []) if is_list else [value]:
            if isinstance(item, FHIRReference):
                yield (path or jsname), item
            elif isinstance(item, FHIRAbstractBase) and not isinstance(item, Resource):
                yield from _references(item, path or jsname)


def _read_back(bundle: dict[str, Any]) -> Bundle:
    """The Bundle read with the R4 models, strictly: an unknown element, a wrong type, a missing required
    element or a malformed date raises; the models' serialisation equals what was sent."""
    model = Bundle(copy.deepcopy(bundle), strict=True)
    assert model.as_json() == bundle
    return model


def _check_references(model: Bundle) -> int:
    count = 0
    for entry in model.entry:
        resource = entry.resource
        for element, reference in _references(resource):
            if reference.reference is None:
                assert reference.display, f"{resource.resource_type}.{element} is empty"
                continue
            expected = EXPECTED_TARGETS[(resource.resource_type, element)]
            target = reference.resolved(expected)
            assert target is not None, f"{resource.resource_type}.{element} -> {reference.reference}"
            assert isinstance(target, expected)
            count += 1
    return count


def test_the_api_bundle_is_strict_r4_with_every_reference_resolved(file_due: Any, clinician: Any) -> None:
    cache.clear()
    study = predicted_study(file_due)
    response = token_client(clinician).get(f"/api/v1/studies/{study.pk}/fhir")
    assert response.status_code == 200
    bundle = response.json()

    model = _read_back(bundle)
    assert model.type == "collection"
    kinds = [type(entry.resource) for entry in model.entry]
    assert kinds.count(Patient) == 1
    assert kinds.count(ImagingStudy) == 1
    assert kinds.count(DiagnosticReport) == 1
    assert kinds.count(Observation) == 6
    # Observations: subject + derivedFrom each (12); ImagingStudy: subject; report: subject, the
    # ImagingStudy and six results.
    assert _check_references(model) == 12 + 1 + 1 + 1 + 6

    imaging = next(e.resource for e in model.entry if isinstance(e.resource, ImagingStudy))
    study_uid = study.dicom_arrivals.get().study_instance_uid
    dicom_ids = [i.value for i in imaging.identifier if i.system == "urn:dicom:uid"]
    assert dicom_ids == [f"urn:oid:{study_uid}"]
    instances = {
        instance.uid: instance.sopClass.code for series in imaging.series for instance in series.instance
    }
    radiographs = {r.dicom_attributes["SOPInstanceUID"] for r in study.radiographs.all()}
    assert set(instances) == radiographs
    assert set(instances.values()) == {
        "urn:oid:1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
        "urn:oid:1.2.840.10008.5.1.4.1.1.1",  # CR
    }
    report = next(e.resource for e in model.entry if isinstance(e.resource, DiagnosticReport))
    assert report.imagingStudy[0].resolved(ImagingStudy) is imaging
    # The application's own validator agrees, and returns the Bundle unchanged.
    assert validate_bundle(bundle) == bundle


def test_the_reviewed_bundle_is_final_and_strict_r4(file_due: Any, clinician: Any) -> None:
    study = predicted_study(file_due)
    for radiograph in study.radiographs.all():
        Review.objects.create(
            radiograph=radiograph,
            prediction=radiograph.predictions.get(),
            reviewer=clinician,
            decision="override",
            final_label="not_fractured",
            reason_code="false_alarm",
            reason_text="Nutrient canal, not a fracture",
        )
    bundle = study_fhir_bundle(study=study)
    model = _read_back(bundle)
    # Eight Observations (subject, derivedFrom), the ImagingStudy (subject), the report (subject,
    # imagingStudy, eight results); the reviewer is named (display), not referenced.
    assert _check_references(model) == 8 * 2 + 1 + 2 + 8
    finals = [
        e.resource
        for e in model.entry
        if isinstance(e.resource, Observation) and e.resource.status == "final"
    ]
    assert len(finals) == 2
    assert {f.performer[0].display for f in finals} == {clinician.get_username()}
    study_refresh_triage(study_id=study.pk)  # the reviews were written directly: the study is now reviewed
    study.refresh_from_db()
    report = next(
        e.resource
        for e in _read_back(study_fhir_bundle(study=study)).entry
        if isinstance(e.resource, DiagnosticReport)
    )
    assert report.conclusion == "Reviewed by a clinician: fracture on 0 of 2 radiographs."


def test_a_study_the_model_declined_is_a_cancelled_report_that_says_why(clinician: Any) -> None:
    study = StudyFactory.create(accession_number="DECLINED-FHIR")
    for position in (0, 1):
        radiograph = RadiographFactory.create(study=study, position=position)
        decline(radiograph, code="body_region", reason="The model was not validated on the skull.")
    study.refresh_from_db()
    assert study.state == Study.State.NOT_ANALYSED
    bundle = study_fhir_bundle(study=study)
    model = _read_back(bundle)
    report = next(e.resource for e in model.entry if isinstance(e.resource, DiagnosticReport))
    # Not "registered", which promises a result: none will come. The reason once, not once per image.
    assert report.status == "cancelled" and not report.result
    assert report.conclusion == (
        "Not analysed by the model, outside its intended use: The model was not validated on the skull."
    )
    # Read without the model afterwards: still no model report (not "final"), and who read it.
    study_read_without_model(study_id=study.pk, reader=clinician)
    study = Study.objects.get(pk=study.pk)
    report = next(
        e.resource
        for e in _read_back(study_fhir_bundle(study=study)).entry
        if isinstance(e.resource, DiagnosticReport)
    )
    assert study.state == Study.State.REVIEWED
    assert report.status == "cancelled" and not report.result
    assert report.conclusion == (
        "Not analysed by the model, outside its intended use: The model was not validated on the skull."
        f" Read by {clinician.get_username()} at {study.read_without_model_at:%Y-%m-%d %H:%M} UTC."
    )
    # A declined image arriving after that read has not been read: the reader is no longer named.
    decline(
        RadiographFactory.create(study=study, position=2), code="body_region", reason="Another skull view."
    )
    study = Study.objects.get(pk=study.pk)
    report = next(
        e.resource
        for e in _read_back(study_fhir_bundle(study=study)).entry
        if isinstance(e.resource, DiagnosticReport)
    )
    assert study.state == Study.State.NOT_ANALYSED and report.status == "cancelled"
    assert "Read by" not in report.conclusion


def _valid_bundle(file_due: Any) -> dict[str, Any]:
    return study_fhir_bundle(study=predicted_study(file_due))


def _first(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


def _patient_ref(bundle: dict[str, Any]) -> str:
    return next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


BREAKAGES: dict[str, tuple[Any, str]] = {
    "an element R4 does not have": (
        lambda b: _first(b, "Observation").update(bogus=True),
        'Superfluous entry "bogus"',
    ),
    "an R5 element (DiagnosticReport.study)": (
        lambda b: _first(b, "DiagnosticReport").update(study=[{"reference": _patient_ref(b)}]),
        'Superfluous entry "study"',
    ),
    "a required element missing (Observation.code)": (
        lambda b: _first(b, "Observation").pop("code"),
        'Non-optional property "code"',
    ),
    "a wrong type": (
        lambda b: _first(b, "ImagingStudy").update(numberOfInstances="two"),
        "Wrong type",
    ),
    "a malformed dateTime": (
        lambda b: _first(b, "Observation").update(effectiveDateTime="yesterday"),
        "does not match expected format",
    ),
    "a status outside its required value set": (
        lambda b: _first(b, "Observation").update(status="probable"),
        "not in the required value set",
    ),
    "an empty string": (
        lambda b: _first(b, "Observation").update(method={"text": ""}),
        "empty values are not allowed",
    ),
    "a reference that resolves to nothing": (
        lambda b: _first(b, "Observation").update(subject={"reference": "urn:uuid:nothing-here"}),
        "does not resolve to an entry of the Bundle",
    ),
    "a reference to a type the element does not allow": (
        lambda b: _first(b, "DiagnosticReport")["result"].append({"reference": _patient_ref(b)}),
        "DiagnosticReport.result allows Observation",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_validator_refuses_what_r4_does_not_allow(breakage: str, file_due: Any) -> None:
    bundle = _valid_bundle(file_due)
    validate_bundle(bundle)
    change, message = BREAKAGES[breakage]
    change(bundle)
    with pytest.raises(FhirValidationError, match=message):
        validate_bundle(bundle)
