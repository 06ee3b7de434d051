"""The queue's v2 features and the smaller fixes of the reading-workflow issue: band filter, name search,
column sort, age and sex, the "being read by" marker, clear words for an empty page and reversed dates; the
upload form's study date and wrong-patient confirmation; the admin-only page's refusal text; no traceback
in the log for an expected refusal; every ingest code documented at /api/problems/<code>."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from radiology import services
from radiology.models import Patient, Study
from tests.conftest import fixture_bytes
from tests.factories import ClinicianFactory
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db
QUEUE = reverse("radiology:queue")


def _accessions(response: Any) -> list[str]:
    return re.findall(r'<td class="accession col-accession">([^<]+)</td>', response.content.decode())


def test_the_band_filter_and_the_name_search(clinician_client: Client, make_study: MakeStudy) -> None:
    make_study(probabilities=[0.9], accession_number="HIGH")
    make_study(probabilities=[0.5], accession_number="MID")
    low = make_study(probabilities=[0.1], accession_number="LOW")
    Patient.objects.filter(pk=low.patient_id).update(name="Grace Brewster Hopper")
    assert _accessions(clinician_client.get(QUEUE, {"band": "doubt"})) == ["MID"]
    assert _accessions(clinician_client.get(QUEUE, {"band": "fracture"})) == ["HIGH"]
    # A case-insensitive prefix of the name or of any of its words.
    assert _accessions(clinician_client.get(QUEUE, {"q": "grac"})) == ["LOW"]
    assert _accessions(clinician_client.get(QUEUE, {"q": "HOPP"})) == ["LOW"]
    assert _accessions(clinician_client.get(QUEUE, {"q": "opper"})) == []


def test_columns_sort_both_ways(clinician_client: Client, make_study: MakeStudy) -> None:
    for accession in ("B-2", "C-3", "A-1"):
        make_study(probabilities=[0.5], accession_number=accession)
    assert _accessions(clinician_client.get(QUEUE, {"sort": "accession"})) == ["A-1", "B-2", "C-3"]
    page = clinician_client.get(QUEUE, {"sort": "-accession"})
    assert _accessions(page) == ["C-3", "B-2", "A-1"]
    assert 'aria-sort="descending"' in page.content.decode()
    assert _accessions(clinician_client.get(QUEUE, {"sort": "nonsense"})) == [
        "B-2",
        "C-3",
        "A-1",
    ]  # queue order


def test_rows_show_age_sex_and_a_colleague_reading(clinician_client: Client, make_study: MakeStudy) -> None:
    study = make_study(probabilities=[0.9])
    born = timezone.localdate() - dt.timedelta(days=int(365.25 * 47) + 30)
    Patient.objects.filter(pk=study.patient_id).update(date_of_birth=born, sex="F")
    colleague = ClinicianFactory.create(username="dr.grace")
    services.study_mark_reading(study_id=study.pk, reader=colleague)
    radiograph = study.radiographs.get()
    radiograph.dicom_attributes = {"ViewPosition": "PA", "ImageLaterality": "L"}
    radiograph.save(update_fields=["dicom_attributes"])
    page = clinician_client.get(QUEUE).content.decode()
    assert '<td class="col-agesex">47 y · F</td>' in page
    assert '<span class="sub">PA L</span>' in page  # view and laterality
    assert "dr.grace is reading" in page
    # The marker expires.
    Study.objects.filter(pk=study.pk).update(reading_until=timezone.now() - dt.timedelta(seconds=1))
    assert "dr.grace is reading" not in clinician_client.get(QUEUE).content.decode()


def test_a_page_past_the_end_and_reversed_dates_are_explained(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    make_study(probabilities=[0.9], accession_number="ONLY")
    page = clinician_client.get(QUEUE, {"page": "99"}).content.decode()
    assert "There is no page 99: these studies fill 1 page." in page
    assert "No studies on this page." in page and "Go to the last page" in page
    assert _accessions(clinician_client.get(QUEUE, {"page": "99"})) == []
    today = timezone.localdate()
    response = clinician_client.get(
        QUEUE,
        {
            "date_from": (today + dt.timedelta(days=1)).isoformat(),
            "date_to": (today - dt.timedelta(days=1)).isoformat(),
        },
    )
    assert "The dates were the wrong way round" in response.content.decode()
    assert _accessions(response) == ["ONLY"]  # read as meant


def test_the_upload_form_has_a_study_date_and_asks_before_filing_under_other_details(
    clinician_client: Client,
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    form = clinician_client.get(reverse("radiology:study_upload")).content.decode()
    assert 'name="study_date"' in form
    data = {
        "mrn": "MRN-TYPED",
        "patient_name": "Jane Doe",
        "accession_number": "UP-1",
        "body_region": "hand",
        "study_date": "2026-11-02",
        "files": [SimpleUploadedFile("pa.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm"))],
    }
    response = clinician_client.post(reverse("radiology:study_upload"), data, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    answer = response.json()
    assert answer["patient_mismatch"] is True and "DCM-0001" in answer["errors"]["mrn"][0]
    assert not Study.objects.exists()
    data["files"] = [SimpleUploadedFile("pa.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm"))]
    data["confirm_patient_mismatch"] = "on"
    response = clinician_client.post(reverse("radiology:study_upload"), data, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    study = Study.objects.get()
    assert response.json()["redirect"] == reverse("radiology:study_detail", args=[study.pk])
    assert (study.patient.mrn, study.study_date) == ("MRN-TYPED", dt.date(2026, 11, 2))


def test_a_clinician_refused_an_admin_page_is_not_told_they_have_no_role(clinician_client: Client) -> None:
    page = clinician_client.get(reverse("radiology:audit_dashboard"))
    assert page.status_code == 403
    text = page.content.decode()
    assert "for administrators" in text and "no role" not in text


def test_an_expected_refusal_logs_no_traceback(
    admin_client_: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = admin_client_.get("/admin/radiology/auditevent/add/")
    assert response.status_code == 403
    refusals = [
        r for r in caplog.records if r.name == "django.request" and getattr(r, "status_code", 0) == 403
    ]
    assert refusals, "the refusal is still logged, as one line"
    assert all(r.exc_info is None for r in refusals)


@pytest.mark.parametrize(
    "code",
    [
        "file_too_large",
        "too_many_pixels",
        "image_too_small",
        "no_pixel_data",
        "not_a_radiograph",
        "reason_contradicts_label",
    ],
)
def test_every_ingest_and_reading_code_is_described(client: Client, code: str) -> None:
    response = client.get(f"/api/problems/{code}")
    assert response.status_code == 200
    assert response.json()["code"] == code


def _empty_row(response: Any) -> str:
    (cell,) = re.findall(r'<td colspan="(\d+)" class="empty">([^<]*)</td>', response.content.decode())
    columns = len(re.findall(r'<th scope="col"', response.content.decode()))
    assert int(cell[0]) == columns  # the message spans the table's columns, no more
    return cell[1]


def test_an_empty_queue_says_why_it_is_empty(clinician_client: Client, make_study: MakeStudy) -> None:
    assert _empty_row(clinician_client.get(QUEUE)) == "Nothing awaits review."
    assert _empty_row(clinician_client.get(QUEUE, {"state": "failed"})) == "No studies here."
    make_study(probabilities=[0.9], accession_number="ONLY")
    assert _empty_row(clinician_client.get(QUEUE, {"q": "nobody"})) == "No studies match these filters."
    # A page number that is not a number shows the first page, which is not "past the end".
    response = clinician_client.get(QUEUE, {"page": "two", "q": "nobody"})
    assert "The page number was not a number" in response.content.decode()
    assert "Go to the last page" not in response.content.decode()
    assert _empty_row(response) == "No studies match these filters."
