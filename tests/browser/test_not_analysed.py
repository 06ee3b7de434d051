"""A study the model declines, in a real browser against the live server and a real `celery worker`: the
clinician sees why, reads it without the model and takes it off the Not analysed worklist."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from radiology.models import AuditEvent, Study
from tests.browser.conftest import sign_in
from tests.conftest import IMAGES
from tests.e2e.harness import WorkerProcess
from tests.factories import ClinicianFactory

pytestmark = [pytest.mark.browser, pytest.mark.real_dispatch, pytest.mark.django_db(transaction=True)]

DECLINE_TIMEOUT_S = 240


def test_a_declined_study_is_read_without_the_model_and_leaves_the_worklist(
    live_server: Any, celery_worker: WorkerProcess, e2e_model_path: Any, open_page: Any, settings: Any
) -> None:
    settings.CLASSIFIER_MODEL = str(e2e_model_path)
    base = live_server.url
    ClinicianFactory.create(username="browser.declined")
    clinician = open_page()
    page = clinician.page
    sign_in(clinician, base, "browser.declined")
    page.goto(f"{base}/studies/new/")
    # An RGBA rendering of a radiograph with arrows drawn on it: the shipped model's out-of-distribution
    # guardrail declines it (README, "Guardrails").
    page.set_input_files("#id_files", [str(IMAGES / "kaggle_fractured_rgba.png")])
    page.fill("#id_mrn", "BR-DECL-1")
    page.fill("#id_patient_name", "Ada Declined")
    page.fill("#id_accession_number", "BR-DECL-ACC")
    page.select_option("#id_body_region", "hand")
    page.click("form#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    assert "1 radiograph accepted and queued" in page.inner_text(".messages")
    study = Study.objects.get(accession_number="BR-DECL-ACC")
    deadline = time.monotonic() + DECLINE_TIMEOUT_S
    while Study.objects.get(pk=study.pk).state == Study.State.PROCESSING and time.monotonic() < deadline:
        time.sleep(1)
    assert Study.objects.get(pk=study.pk).state == Study.State.NOT_ANALYSED

    page.goto(f"{base}/queue/?state=not_analysed")
    page.click(f"#study-row-{study.pk} a.row-link")
    page.wait_for_url(f"**/studies/{study.pk}/")
    assert "The model did not analyse this study" in page.inner_text("#read-without-model")
    page.wait_for_selector("#failure-text:visible")
    assert page.inner_text("#failure-text").startswith("Not analysed. This image is unlike")
    assert page.inner_text("#history-empty") == "Nothing to review: the model did not analyse this image."

    page.click("#read-without-model button[type=submit]")
    page.wait_for_url(f"{base}/queue/")
    assert "Study BR-DECL-ACC: read without the model." in page.inner_text(".messages")
    page.goto(f"{base}/queue/?state=reviewed")
    status = " ".join(page.inner_text(f"#study-row-{study.pk} .state-cell").split())
    assert status == "Reviewed read without the model · browser.declined"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.STUDY_READ_WITHOUT_MODEL).count() == 1
    clinician.assert_clean()
