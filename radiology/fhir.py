"""A study's result as a FHIR R4 Bundle: Patient, ImagingStudy (by StudyInstanceUID), one Observation per
radiograph for each of the model's finding, band and calibrated probability and for the reviewer's final
call, and a DiagnosticReport that gathers them.

The Bundle is validated as FHIR R4 4.0.1 before it leaves (radiology.fhir_validation: fhirclient's R4
models, the required bindings, and every reference resolved inside the Bundle): a Bundle that does not
validate is a server error here, never a document sent to a hospital's record.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from radiology import selectors, services
from radiology.dicomnet.models import DicomInstance
from radiology.fhir_validation import FhirValidationError, validate_bundle
from radiology.models import Label, Radiograph, Review, Study
from radiology.wording import counted

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DICOM_UID = "urn:dicom:uid"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
# Codes with no standard equivalent (the same meanings as the SR's private scheme 99FRACREV).
LOCAL = "urn:fracture-review:codes"
MRN_SYSTEM = "urn:fracture-review:mrn"
ACCESSION_SYSTEM = "urn:fracture-review:accession"

FRACTURE = {"system": SNOMED, "code": "125605004", "display": "Fracture of bone"}
PRESENT = {"system": SNOMED, "code": "52101004", "display": "Present"}
ABSENT = {"system": SNOMED, "code": "2667000", "display": "Absent"}
BAND_NAMES = {"fracture": "Fracture", "doubt": "Doubt", "no_fracture": "No fracture"}
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
__all__ = ["FhirValidationError", "study_fhir_bundle"]

_NAMESPACE = uuid.UUID("6f0c62f4-5a5e-4f5e-9d2b-0f6d8e0a1b14")


def _urn(*parts: Any) -> str:
    """A stable urn:uuid per resource, so the same study gives the same Bundle entries each time."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(str(p) for p in parts))}"


def _instant(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds")


def _finding_value(label: str) -> dict[str, Any]:
    return {"coding": [PRESENT if label == Label.FRACTURED else ABSENT]}


def _radiograph_identity(radiograph: Radiograph) -> dict[str, str]:
    return {
        key: str(radiograph.dicom_attributes.get(key, ""))
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality")
    }


def _sop_class(radiograph: Radiograph, identity: dict[str, str]) -> str:
    """The SOP class as received over DICOM, else the radiograph storage class its modality implies."""
    received = (
        DicomInstance.objects.filter(radiograph=radiograph).values_list("sop_class_uid", flat=True).first()
    )
    if received:
        return str(received)
    return CR_IMAGE_STORAGE if identity["Modality"] == "CR" else DX_IMAGE_STORAGE


def study_fhir_bundle(*, study: Study) -> dict[str, Any]:
    """The Bundle (type collection) as JSON-ready data, validated."""
    patient = study.patient
    radiographs = list(study.radiographs.prefetch_related("refusals").order_by("position", "pk"))
    current = services.current_predictions([r.pk for r in radiographs])
    latest_reviews: dict[int, Review] = {}
    for review in (
        Review.objects.filter(radiograph__in=radiographs)
        .select_related("reviewer")
        .order_by("created_at", "pk")
    ):
        latest_reviews[review.radiograph_id] = review

    patient_ref = _urn("patient", patient.pk)
    study_ref = _urn("imaging-study", study.pk)
    report_ref = _urn("report", study.pk)
    entries: list[dict[str, Any]] = []

    patient_resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": patient.mrn}],
        "gender": {"F": "female", "M": "male", "O": "other"}.get(patient.sex, "unknown"),
    }
    if patient.name.strip():  # FHIR JSON allows no empty values
        patient_resource["name"] = [{"text": patient.name}]
    if patient.date_of_birth:
        patient_resource["birthDate"] = patient.date_of_birth.isoformat()
    entries.append({"fullUrl": patient_ref, "resource": patient_resource})

    identities = [_radiograph_identity(r) for r in radiographs]
    study_uid = next((i["StudyInstanceUID"] for i in identities if i["StudyInstanceUID"]), "")
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": patient_ref},
        "identifier": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                },
                "system": ACCESSION_SYSTEM,
                "value": study.accession_number,
            }
        ],
        "started": _instant(study.created_at),
        "numberOfInstances": len(radiographs),
        "description": f"{study.get_body_region_display()} radiographs",
    }
    if study_uid:
        imaging_study["identifier"].insert(0, {"system": DICOM_UID, "value": f"urn:oid:{study_uid}"})
    series: dict[str, dict[str, Any]] = {}
    for radiograph, identity in zip(radiographs, identities, strict=True):
        if not identity["SeriesInstanceUID"] or not identity["SOPInstanceUID"]:
            continue
        entry = series.setdefault(
            identity["SeriesInstanceUID"],
            {
                "uid": identity["SeriesInstanceUID"],
                "modality": {"system": DICOM_DCM, "code": identity["Modality"] or "DX"},
                "instance": [],
            },
        )
        entry["instance"].append(
            {
                "uid": identity["SOPInstanceUID"],
                "sopClass": {
                    "system": "urn:ietf:rfc:3986",
                    "code": f"urn:oid:{_sop_class(radiograph, identity)}",
                },
                "number": radiograph.position + 1,
            }
        )
    if series:
        imaging_study["series"] = [
            {**value, "numberOfInstances": len(value["instance"])} for value in series.values()
        ]
    entries.append({"fullUrl": study_ref, "resource": imaging_study})

    results: list[dict[str, str]] = []
    reviewed_all = bool(current) and all(r.pk in latest_reviews for r in radiographs if r.pk in current)
    for radiograph in radiographs:
        prediction = current.get(radiograph.pk)
        if prediction is None:
            continue
        focus = f"Radiograph {radiograph.position + 1} ({radiograph.original_filename})"
        common = {
            "resourceType": "Observation",
            "subject": {"reference": patient_ref},
            "derivedFrom": [{"reference": study_ref}],
            "effectiveDateTime": _instant(prediction.created_at),
            "method": {"text": f"Fracture Review model {prediction.model_version}"},
            "note": [{"text": focus}],
        }
        model_observations = [
            (
                "finding",
                {
                    **common,
                    "status": "preliminary",
                    "code": {"coding": [FRACTURE], "text": "Fracture (model)"},
                    "valueCodeableConcept": _finding_value(prediction.label),
                },
            ),
            (
                "probability",
                {
                    **common,
                    "status": "preliminary",
                    "code": {
                        "coding": [
                            {
                                "system": LOCAL,
                                "code": "fracture-probability",
                                "display": "Calibrated probability of fracture",
                            }
                        ]
                    },
                    "valueQuantity": {
                        "value": round(float(prediction.probability), 4),
                        "unit": "probability",
                        "system": UCUM,
                        "code": "1",
                    },
                    "referenceRange": [
                        {
                            "low": {"value": round(float(prediction.threshold), 4)},
                            "text": "operating threshold",
                        }
                    ],
                },
            ),
        ]
        band = getattr(prediction, "band", "") or ""
        if band in BAND_NAMES:
            model_observations.append(
                (
                    "band",
                    {
                        **common,
                        "status": "preliminary",
                        "code": {
                            "coding": [
                                {"system": LOCAL, "code": "triage-band", "display": "Fracture triage band"}
                            ]
                        },
                        "valueCodeableConcept": {
                            "coding": [{"system": LOCAL, "code": band, "display": BAND_NAMES[band]}]
                        },
                    },
                )
            )
        for kind, resource in model_observations:
            reference = _urn("observation", kind, prediction.pk)
            entries.append({"fullUrl": reference, "resource": resource})
            results.append({"reference": reference})
        latest = latest_reviews.get(radiograph.pk)
        if latest is not None:
            review = latest
            reviewer = review.reviewer.get_full_name() or review.reviewer.get_username()
            decision = "confirmed" if review.decision == Review.Decision.CONFIRM else "overridden"
            final: dict[str, Any] = {
                "resourceType": "Observation",
                "status": "final",
                "subject": {"reference": patient_ref},
                "derivedFrom": [{"reference": study_ref}],
                "effectiveDateTime": _instant(review.created_at),
                "performer": [{"display": reviewer}],
                "code": {"coding": [FRACTURE], "text": "Fracture (clinician's final call)"},
                "valueCodeableConcept": _finding_value(review.final_label),
                "component": [
                    {
                        "code": {
                            "coding": [
                                {
                                    "system": LOCAL,
                                    "code": "review-decision",
                                    "display": "Decision on the model's result",
                                }
                            ]
                        },
                        "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": decision}]},
                    }
                ],
                "note": [{"text": focus}],
            }
            if review.reason_code:
                final["component"].append(
                    {
                        "code": {
                            "coding": [
                                {
                                    "system": LOCAL,
                                    "code": "override-reason",
                                    "display": "Reason for the override",
                                }
                            ]
                        },
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": LOCAL,
                                    "code": review.reason_code,
                                    "display": review.get_reason_code_display(),
                                }
                            ],
                            **({"text": review.reason_text} if review.reason_text else {}),
                        },
                    }
                )
            reference = _urn("observation", "final-call", review.pk)
            entries.append({"fullUrl": reference, "resource": final})
            results.append({"reference": reference})

    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": _report_status(
            study, declined=_declined(study), reviewed_all=reviewed_all, has_results=bool(results)
        ),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
        "subject": {"reference": patient_ref},
        "imagingStudy": [{"reference": study_ref}],
        "identifier": [{"system": ACCESSION_SYSTEM, "value": study.accession_number}],
        "issued": _instant(study.reviewed_at or study.created_at),
        "conclusion": _conclusion(study, radiographs, current, latest_reviews),
    }
    if results:
        report["result"] = results
    entries.append({"fullUrl": report_ref, "resource": report})
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(dt.datetime.now(dt.UTC)),
        "entry": entries,
    }
    return validate_bundle(bundle)


def _declined(study: Study) -> bool:
    """The model declined every radiograph: still on the worklist, or since read without the model."""
    return study.state == Study.State.NOT_ANALYSED or study.read_without_model_stands


def _report_status(study: Study, *, declined: bool, reviewed_all: bool, has_results: bool) -> str:
    # "cancelled": R4's status for a report that will not come because the work was not done, as for a
    # study whose every radiograph the model declined (read without it or not); "registered" would
    # promise a result, "final" a model result that never was.
    if declined:
        return "cancelled"
    return "final" if reviewed_all else "preliminary" if has_results else "registered"


def _conclusion(
    study: Study, radiographs: list[Radiograph], current: dict[int, Any], reviews: dict[int, Review]
) -> str:
    if _declined(study):
        reasons = dict.fromkeys(
            refusal.reason for r in radiographs if (refusal := selectors.radiograph_refusal(r)) is not None
        )
        # The guardrails' own reasons say what to do (e.g. "Read it without the model."): not repeated here.
        conclusion = "Not analysed by the model, outside its intended use: " + (
            " ".join(reasons) or "no reason kept."
        )
        if study.read_without_model_stands and study.read_without_model_by is not None:
            # The reasons already say "read it without the model": who did, and when.
            read_at = study.read_without_model_at
            when = f" at {read_at:%Y-%m-%d %H:%M} UTC" if read_at is not None else ""
            conclusion += f" Read by {study.read_without_model_by.get_username()}{when}."
        return conclusion
    if not current:
        return "No radiograph of this study has been classified yet."
    if reviews and study.state == Study.State.REVIEWED:
        fractured = sum(1 for r in reviews.values() if r.final_label == Label.FRACTURED)
        return f"Reviewed by a clinician: fracture on {fractured} of {counted(len(reviews), 'radiograph')}."
    top = max(current.values(), key=lambda p: p.probability)
    return (
        f"Awaiting a clinician's review. Highest model probability {top.probability:.2f} "
        f"(model {top.model_version}); the model's result is not a diagnosis."
    )
