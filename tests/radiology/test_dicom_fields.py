"""DICOM attributes mapped to a study's fields (radiology.ingest.dicom_study_fields)."""

from __future__ import annotations

import datetime as dt

from radiology.ingest import DicomStudyFields, dicom_study_fields
from radiology.models import BodyRegion, Sex


def test_it_maps_patient_and_study_attributes_to_the_records_terms() -> None:
    fields = dicom_study_fields(
        {
            "PatientID": " MRN-7 ",
            "PatientName": "Doe Jane",
            "PatientBirthDate": "1980-02-29",
            "PatientSex": "f",
            "AccessionNumber": "ACC-1",
            "BodyPartExamined": "lower leg",
            "StudyDate": "2026-11-30",
        }
    )
    assert fields == DicomStudyFields(
        mrn="MRN-7",
        patient_name="Doe Jane",
        date_of_birth=dt.date(1980, 2, 29),
        sex=Sex.FEMALE,
        accession_number="ACC-1",
        body_region=BodyRegion.LEG,
        study_date=dt.date(2026, 11, 30),
    )


def test_what_the_records_cannot_hold_is_left_blank() -> None:
    fields = dicom_study_fields(
        {"PatientSex": "X", "BodyPartExamined": "CHEST", "PatientBirthDate": "not a date", "StudyDate": ""}
    )
    assert fields == DicomStudyFields()
