"""DICOM attributes mapped to a study's fields (radiology.ingest.dicom_study_fields)."""

from __future__ import annotations

import datetime as dt

import pytest

from radiology.ingest import DicomStudyFields, dicom_study_fields, person_name_display
from radiology.models import BodyRegion, Sex


def test_it_maps_patient_and_study_attributes_to_the_records_terms() -> None:
    fields = dicom_study_fields(
        {
            "PatientID": " MRN-7 ",
            "PatientName": "Jane Doe",
            "PatientBirthDate": "1980-02-29",
            "PatientSex": "f",
            "AccessionNumber": "ACC-1",
            "BodyPartExamined": "lower leg",
            "StudyDate": "2026-11-30",
        }
    )
    assert fields == DicomStudyFields(
        mrn="MRN-7",
        patient_name="Jane Doe",
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


@pytest.mark.parametrize(
    ("sent", "filed"),
    [
        ("Doe^Jane", "Jane Doe"),
        ("Doe^Jane^Q^Dr^Jr", "Dr Jane Q Doe Jr"),
        ("Doe^Jane=山田^太郎=やまだ^たろう", "Jane Doe"),  # the alphabetic group only
        ("Jane Doe", "Jane Doe"),  # no carets: as the modality wrote it
        ("  Doe ^ Jane  ^^", "Jane Doe"),
        ("^^^", ""),
    ],
)
def test_a_dicom_person_name_is_filed_as_people_write_it(sent: str, filed: str) -> None:
    assert person_name_display(sent) == filed
