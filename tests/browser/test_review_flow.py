"""The issue's flow in a real browser, against the live server and a real `celery worker`:

a clinician signs in, uploads a study, waits for the model's predictions, opens the study from the queue,
zooms and toggles the heatmap, overrides the first radiograph with a reason using only the keyboard and
confirms the next one; an admin then finds both reviews on the audit dashboard and in the admin.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from radiology.models import Prediction, Review, Study
from tests.browser.conftest import Watched, scale_of, screenshot_dir, sign_in, transform_of
from tests.conftest import IMAGES
from tests.e2e.harness import WorkerProcess
from tests.factories import AdminFactory, ClinicianFactory

pytestmark = [pytest.mark.browser, pytest.mark.real_dispatch, pytest.mark.django_db(transaction=True)]

PREDICTION_TIMEOUT_MS = 240_000


def _upload(watched: Watched, base: str) -> Study:
    page = watched.page
    page.goto(f"{base}/studies/new/")
    page.set_input_files(
        "#id_files", [str(IMAGES / "kaggle_fractured_1.jpg"), str(IMAGES / "kaggle_not_fractured_1.jpg")]
    )
    page.fill("#id_mrn", "BR-0001")
    page.fill("#id_patient_name", "Rosalind Franklin")
    page.fill("#id_accession_number", "BR-ACC-1")
    page.select_option("#id_body_region", "wrist")
    page.click("form#upload-form button[type=submit]")
    page.wait_for_url("**/studies/*/")
    assert "2 radiographs accepted and queued" in page.inner_text(".messages")
    return Study.objects.get(accession_number="BR-ACC-1")


def _keyboard_override(watched: Watched, model_label: str) -> None:
    """O opens the form; a digit picks the reason; Tab reaches the notes; Ctrl+Enter records it."""
    page = watched.page
    page.keyboard.press("o")
    page.wait_for_selector("#override[open]")
    # Only the reasons that fit the final label are offered: 1 is "No fracture where the model saw one"
    # for an override to not fractured, "Model missed a fracture" for an override to fractured.
    page.keyboard.press("1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_reason_text"
    page.keyboard.type("Cortex intact on both views")
    page.keyboard.press("Control+Enter")


def test_clinician_reviews_by_keyboard_and_admin_finds_both_reviews(
    live_server: Any,
    celery_worker: WorkerProcess,
    e2e_model_path: Any,
    open_page: Any,
    settings: Any,
) -> None:
    # The web process checks the same artifact the worker uses (an absent one shows a banner).
    settings.CLASSIFIER_MODEL = str(e2e_model_path)
    base = live_server.url
    ClinicianFactory.create(username="browser.clinician")
    AdminFactory.create(username="browser.admin")
    shots = screenshot_dir()

    clinician = open_page()
    page = clinician.page
    sign_in(clinician, base, "browser.clinician")
    study = _upload(clinician, base)

    # The queue's processing tab updates the row in place when the predictions arrive (no reload).
    page.goto(f"{base}/queue/?state=all")
    page.evaluate("window.__notReloaded = true")
    row = f"#study-row-{study.pk}"
    page.wait_for_selector(f"{row}:not([data-poll])", timeout=PREDICTION_TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded === true")
    study.refresh_from_db()
    assert study.state == Study.State.AWAITING_REVIEW, celery_worker.output()
    clinician.assert_no_horizontal_scroll()

    # Open it from the awaiting-review queue.
    page.goto(f"{base}/queue/")
    badge = page.inner_text(f"{row} .verdict")
    assert badge.startswith(("Fracture · ", "Doubt · ", "No fracture · ")) and badge.endswith(" %"), badge
    assert "likely" not in badge
    if shots:
        page.screenshot(path=str(shots / "queue.png"))
    page.click(f"{row} a.row-link")
    page.wait_for_selector("#viewer-0[data-ready=yes]")
    clinician.assert_no_horizontal_scroll()
    first_id = int(page.get_attribute("#review", "data-selected") or 0)
    first_prediction = Prediction.objects.get(radiograph_id=first_id)
    verdict = page.inner_text("#verdict")
    assert verdict.startswith(first_prediction.get_band_display() + " · "), verdict
    assert first_prediction.model_version in page.inner_text(".model-panel")

    # Zoom with the wheel and the button, pan by dragging, invert by key, reset.
    fitted = scale_of(clinician)
    box = page.locator("#viewer-0").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -400)
    page.wait_for_selector("#viewer-0:not([data-zoom='1.000'])")
    zoomed = scale_of(clinician)
    assert zoomed > fitted
    page.click("[data-action=zoom-in]")
    assert scale_of(clinician) > zoomed
    before_pan = transform_of(clinician)
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=4)
    page.mouse.up()
    assert transform_of(clinician) != before_pan
    # The heatmap is off by default (and offered only when the model card validates it).
    assert page.get_attribute("#viewer-0", "data-heatmap") == "off"
    page.keyboard.press("i")
    assert page.get_attribute("#viewer-0", "data-invert") == "yes"
    page.keyboard.press("r")
    assert page.get_attribute("#viewer-0", "data-invert") == "no"
    assert abs(scale_of(clinician) - fitted) < 1e-3
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")
    if shots:
        page.screenshot(path=str(shots / "review.png"))

    # Override the image on screen by keyboard alone; the page stays (no reload) on the study.
    page.evaluate("window.__notReloaded = true")
    _keyboard_override(clinician, first_prediction.label)
    page.wait_for_selector("#flash:not([hidden])")
    assert "Override recorded" in page.inner_text("#flash")
    assert page.evaluate("window.__notReloaded === true")
    override = Review.objects.get(radiograph_id=first_id)
    assert override.decision == "override" and override.final_label != first_prediction.label
    assert override.reason_code == (
        "false_alarm" if first_prediction.label == "fractured" else "missed_fracture"
    )
    assert override.reason_text == "Cortex intact on both views"

    # Confirm the rest of the study: C arms the button, Enter records. No study is left: the queue.
    page.keyboard.press("c")
    assert page.is_visible("#confirm-hint")
    page.keyboard.press("Enter")
    page.wait_for_url("**/queue/")
    assert "No studies await review" in page.inner_text(".messages")
    second_id = next(r.pk for r in study.radiographs.all() if r.pk != first_id)
    confirm = Review.objects.get(radiograph_id=second_id)
    assert (
        confirm.decision == "confirm"
        and confirm.final_label == Prediction.objects.get(radiograph_id=second_id).label
    )
    study.refresh_from_db()
    assert study.state == Study.State.REVIEWED
    clinician.assert_clean()

    # The admin finds both reviews on the dashboard and in the admin.
    auditor = open_page()
    sign_in(auditor, base, "browser.admin")
    admin_page = auditor.page
    admin_page.goto(f"{base}/audit/")
    for review in (override, confirm):
        assert admin_page.is_visible(f"#recent-reviews tr[data-review='{review.pk}']")
    assert f"Model {first_prediction.model_version}" in admin_page.inner_text("main")
    assert admin_page.is_visible(".chart")
    auditor.assert_no_horizontal_scroll()
    if shots:
        admin_page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    admin_page.goto(f"{base}/admin/radiology/review/?q=BR-ACC-1")
    listing = admin_page.inner_text("#result_list")
    assert "Override" in listing and "Confirm" in listing and "browser.clinician" in listing
    assert admin_page.locator("#result_list tbody tr").count() == 2
    auditor.assert_clean()


def test_queue_rows_update_in_place_while_processing(
    live_server: Any, open_page: Any, make_study: Any
) -> None:
    """No worker needed: the test stores the prediction itself and watches the row change without reload."""
    from django.db import transaction

    from radiology import services

    ClinicianFactory.create(username="browser.clinician")
    study = make_study(probabilities=[0.3, None], accession_number="LIVE-1")
    watched = open_page()
    sign_in(watched, live_server.url, "browser.clinician")
    page = watched.page
    page.goto(f"{live_server.url}/queue/?state=processing")
    row = f"#study-row-{study.pk}"
    assert page.inner_text(f"{row} .verdict-cell").strip() == "Classifying 1/2"
    page.evaluate("window.__notReloaded = true")
    waiting = study.radiographs.get(position=1)
    assert services.radiograph_claim(radiograph_id=waiting.pk)
    services.prediction_store(
        radiograph_id=waiting.pk,
        model_version="test-model-1",
        probability=0.87,
        label="fractured",
        band="fracture",
        threshold=0.5,
        heatmap_png=None,
        inference_ms=5.0,
    )
    with transaction.atomic():
        services.study_refresh_triage(study_id=study.pk)
    page.wait_for_selector(f"{row}:not([data-poll])", timeout=15_000)
    assert page.inner_text(f"{row} .verdict") == "Fracture · 87 %"
    assert page.evaluate("window.__notReloaded === true")
    assert page.inner_text(".tabs [data-count=awaiting_review]") == "1"
    # Keyboard in the queue: j selects the first row, Enter opens it.
    page.goto(f"{live_server.url}/queue/")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/studies/{study.pk}/")
    time.sleep(0.2)
    watched.assert_clean()


def test_the_review_page_shows_the_result_when_it_arrives(
    live_server: Any, open_page: Any, make_study: Any
) -> None:
    """A study opened while still processing: the thumbnails update and the page fills in by itself."""
    from django.db import transaction

    from radiology import services

    ClinicianFactory.create(username="browser.clinician")
    study = make_study(probabilities=[None], accession_number="WAIT-1")
    radiograph = study.radiographs.get()
    watched = open_page()
    sign_in(watched, live_server.url, "browser.clinician")
    page = watched.page
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#model-pending:not([hidden])")
    assert "Classifying…" in page.inner_text(".model-panel")
    assert page.is_disabled("[data-action=boxes]")
    page.evaluate("window.__notReloaded = true")
    assert services.radiograph_claim(radiograph_id=radiograph.pk)
    services.prediction_store(
        radiograph_id=radiograph.pk,
        model_version="test-model-1",
        probability=0.12,
        label="not_fractured",
        band="no_fracture",
        threshold=0.5,
        heatmap_png=None,
        inference_ms=5.0,
    )
    with transaction.atomic():
        services.study_refresh_triage(study_id=study.pk)
    page.wait_for_selector("#confirm-button", timeout=15_000)
    assert page.inner_text("#verdict") == "No fracture · 12 %"
    assert page.evaluate("window.__notReloaded === true")  # arrived in place, no reload
    watched.assert_clean()
