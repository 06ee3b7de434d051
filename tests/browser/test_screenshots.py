"""The README's screenshots: real pages, real predictions from the model the worker loads (the shipped one
in models/ when present), on radiographs from the FracAtlas test split.

Not part of `make test` (it writes into the repository): it carries the `screenshots` marker, which the
test command deselects. Regenerate the README's screenshots with

    make screenshots      # UI_SCREENSHOT_DIR=docs/screenshots pytest -m screenshots

The reviews on the dashboard are entered by this script as a clinician would, with the dataset's labels as
the clinician's final label, so the dashboard's figures are the model's agreement with those labels.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import pytest

from radiology import services
from radiology.models import Prediction, Radiograph, Study
from tests.browser.conftest import screenshot_dir, sign_in
from tests.e2e.harness import ROOT, WorkerProcess
from tests.factories import AdminFactory, ClinicianFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.real_dispatch,
    pytest.mark.django_db(transaction=True),
    pytest.mark.screenshots,
]

DATASET = Path(os.environ.get("FRACATLAS_DIR", str(ROOT.parent / "shared" / "datasets" / "fracatlas")))
PATIENTS = [
    "Amara Okafor", "Jonas Lindqvist", "Mei Tanaka", "Rafael Duarte", "Ingrid Solberg", "Tomasz Nowak",
    "Leila Haddad", "Samuel Adeyemi", "Clara Fontaine", "Arjun Mehta", "Sofia Rossi", "Henrik Berg",
]  # fmt: skip
# (fractured, region, radiographs in the study): a day's worth of mixed work.
PLAN = [
    (True, "hand", 2), (False, "leg", 1), (True, "leg", 1), (False, "hand", 2), (False, "hip", 1),
    (True, "hand", 1), (False, "shoulder", 1), (False, "leg", 2), (True, "shoulder", 1), (False, "hand", 1),
    (True, "hip", 1), (False, "leg", 1),
]  # fmt: skip
REVIEWED_STUDIES = 8  # the rest stay in the queue


def _pick_images() -> list[list[tuple[Path, str]]]:
    rows = [r for r in csv.DictReader((DATASET / "manifest.csv").open()) if r["split"] == "test"]
    used: set[str] = set()
    studies = []
    for fractured, region, count in PLAN:
        label = "fractured" if fractured else "not_fractured"
        pool = [
            r
            for r in rows
            if r["label"] == label and region in r["region"].split("|") and r["path"] not in used
        ]
        chosen = pool[:count]
        used.update(r["path"] for r in chosen)
        studies.append([(DATASET / r["path"], r["label"]) for r in chosen])
    return studies


def test_readme_screenshots(
    live_server: Any, celery_worker: WorkerProcess, e2e_model_path: Any, open_page: Any, settings: Any
) -> None:
    assert (DATASET / "manifest.csv").exists(), f"the screenshots need the FracAtlas test split at {DATASET}"
    settings.CLASSIFIER_MODEL = str(e2e_model_path)
    shots = screenshot_dir()
    assert shots is not None
    clinician = ClinicianFactory.create(username="dr.okafor")
    second_reader = ClinicianFactory.create(username="dr.lindqvist")
    AdminFactory.create(username="audit.admin")

    truth: dict[int, str] = {}
    studies = []
    for number, (images, (_, region, _)) in enumerate(zip(_pick_images(), PLAN, strict=True)):
        result = services.study_create(
            uploaded_by=clinician,
            details=services.StudyDetails(
                mrn=f"MRN-{48210 + number * 37}",
                patient_name=PATIENTS[number],
                accession_number=f"RAD-2026-{1180 + number}",
                body_region=region,
            ),
            files=[services.UploadedImage(path.name, path.read_bytes()) for path, _ in images],
        )
        assert result.study is not None and not result.rejected
        studies.append(result.study)
        for radiograph, (_, label) in zip(result.accepted, images, strict=True):
            truth[radiograph.pk] = label

    deadline = time.monotonic() + 600
    while Radiograph.objects.exclude(status=Radiograph.Status.PREDICTED).exists():
        assert time.monotonic() < deadline, celery_worker.output()
        time.sleep(1)

    # Two clinicians review most of the studies; the dataset's label is their final word.
    for index, study in enumerate(studies[:REVIEWED_STUDIES]):
        reader = clinician if index % 2 == 0 else second_reader
        for radiograph in study.radiographs.all():
            prediction = Prediction.objects.get(radiograph=radiograph)
            if prediction.label == truth[radiograph.pk]:
                services.review_submit(radiograph_id=radiograph.pk, reviewer=reader, decision="confirm")
            else:
                missed = truth[radiograph.pk] == "fractured"
                services.review_submit(
                    radiograph_id=radiograph.pk,
                    reviewer=reader,
                    decision="override",
                    final_label=truth[radiograph.pk],
                    reason_code="missed_fracture" if missed else "false_alarm",
                    reason_text="Subtle cortical break" if missed else "",
                )

    watched = open_page()
    page = watched.page
    sign_in(watched, live_server.url, "dr.okafor")
    page.goto(f"{live_server.url}/queue/?state=all")
    page.screenshot(path=str(shots / "queue.png"))
    # The review page of the most suspicious study still waiting, two images side by side, boxes on.
    waiting = Study.objects.filter(state=Study.State.AWAITING_REVIEW).order_by("-max_probability").first()
    assert waiting is not None
    page.goto(f"{live_server.url}/studies/{waiting.pk}/")
    page.wait_for_selector("#viewer-0[data-ready=yes]")
    if waiting.radiograph_count > 1:
        page.keyboard.press("2")
        page.wait_for_selector("#viewer-1[data-ready=yes]")
    if page.get_attribute("#viewer-0", "data-boxes") == "off" and not page.is_disabled("[data-action=boxes]"):
        page.keyboard.press("b")
    page.mouse.move(10, 10)
    page.screenshot(path=str(shots / "review.png"))
    page.keyboard.press("o")
    page.keyboard.press("1")
    page.screenshot(path=str(shots / "review-override.png"))
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    page.screenshot(path=str(shots / "shortcuts.png"))
    watched.assert_clean()

    auditor = open_page()
    sign_in(auditor, live_server.url, "audit.admin")
    auditor.page.goto(f"{live_server.url}/audit/")
    auditor.page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    auditor.page.goto(f"{live_server.url}/admin/radiology/prediction/")
    auditor.page.screenshot(path=str(shots / "admin-predictions.png"))
    auditor.assert_clean()
