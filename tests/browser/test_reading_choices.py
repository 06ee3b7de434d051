"""The reader's and the site's choices on the review page, in a real Chromium against the live server: an
administrator switches the site's blinded-first-read default on the audit dashboard and a clinician who
never chose then reads blinded (the band is not in the DOM before their unaided call); in 2-up the reader
chooses the second image (Shift+click on a thumbnail, { / }, the "Beside it" list), and the choice stays
while they move through the study.
"""

from __future__ import annotations

from typing import Any

import pytest

from radiology.models import AuditEvent, SiteSettings
from tests.browser.conftest import predicted_study, screenshot_dir, sign_in
from tests.browser.test_reading import FILES, _ready
from tests.factories import AdminFactory, ClinicianFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_turns_blinded_reading_on_for_readers_who_never_chose(
    live_server: Any, open_page: Any
) -> None:
    AdminFactory.create(username="browser.admin")
    reader = ClinicianFactory.create(username="browser.reader")  # never chose: follows the site
    study = predicted_study(reader, "BLIND-SITE-1", FILES[:2], [0.91, 0.12])

    admin = open_page()
    sign_in(admin, live_server.url, "browser.admin")
    page = admin.page
    page.goto(f"{live_server.url}/audit/")
    assert "Now off" in page.inner_text("#site-settings-state")
    page.check("#site-settings input[name=blinded_read_default][value=on]")
    page.click("#site-settings-save")
    page.wait_for_selector("#site-settings-state")
    assert "Now on" in page.inner_text("#site-settings-state")
    assert "changed by browser.admin" in page.inner_text("#site-settings-state")
    assert SiteSettings.objects.get().blinded_read_default is True
    event = AuditEvent.objects.get(action=AuditEvent.Action.SITE_SETTING)
    assert event.actor_name == "browser.admin" and event.details["after"] is True
    admin.assert_clean()

    clinician = open_page()
    sign_in(clinician, live_server.url, "browser.reader")
    page = clinician.page
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    _ready(page)
    # Not hidden: absent. Neither the band nor the percentage is anywhere in the DOM.
    html = page.content()
    for text in ("band-fracture", "band-doubt", "band-no_fracture", "Fracture ·", "No fracture ·", "91 %"):
        assert text not in html, text
    assert page.is_visible("#model-hidden")
    assert "the site's default" in page.inner_text("#blinded-by")
    shots = screenshot_dir()
    if shots:
        page.screenshot(path=str(shots / "review-blinded-site-default.png"))
    page.keyboard.press("x")  # the reader's own call on both images
    page.wait_for_selector("#verdict[data-band]")
    assert "Fracture · 91 %" in page.content()
    clinician.assert_clean()


def test_the_reader_chooses_the_second_image_in_2up_and_it_stays(live_server: Any, open_page: Any) -> None:
    reader = ClinicianFactory.create(username="browser.reader")
    study = predicted_study(reader, "TWOUP-1", FILES, [0.91, 0.12, 0.45, 0.05])
    ids = [r.pk for r in sorted(study.radiographs.all(), key=lambda r: r.position)]
    watched = open_page()
    sign_in(watched, live_server.url, "browser.reader")
    page = watched.page
    page.goto(f"{live_server.url}/studies/{study.pk}/?r={ids[0]}")
    _ready(page)

    def panes() -> tuple[int, int]:
        _ready(page, "#viewer-0")
        _ready(page, "#viewer-1")
        return (
            int(page.get_attribute("#viewer-0", "data-image") or 0),
            int(page.get_attribute("#viewer-1", "data-image") or 0),
        )

    # Shift+click on the fourth thumbnail: 2-up opens with image 4 beside image 1.
    page.click(f"#thumb-{ids[3]}", modifiers=["Shift"])
    page.wait_for_selector("#viewers[data-layout='2']")
    assert panes() == (ids[0], ids[3])
    assert page.get_attribute(f"#thumb-{ids[3]}", "data-compared") == "yes"
    assert page.input_value("#compare-select") == str(ids[3])
    # Moving through the study keeps image 4 in the second pane, without a page load.
    page.evaluate("window.__notReloaded = true")
    page.keyboard.press("]")
    page.wait_for_selector(f"#viewer-0[data-image='{ids[1]}']")
    assert panes() == (ids[1], ids[3])
    # By keyboard: { and } step the second pane's image, skipping the one on screen.
    page.keyboard.press("{")
    page.wait_for_selector(f"#viewer-1[data-image='{ids[2]}']")
    page.keyboard.press("{")
    page.wait_for_selector(f"#viewer-1[data-image='{ids[0]}']")  # image 2 is on screen: skipped
    assert panes() == (ids[1], ids[0])
    page.keyboard.press("}")
    page.wait_for_selector(f"#viewer-1[data-image='{ids[2]}']")
    # 1-up and back: the choice is kept.
    page.keyboard.press("2")
    page.wait_for_selector("#viewers[data-layout='1']")
    page.keyboard.press("2")
    page.wait_for_selector("#viewers[data-layout='2']")
    assert panes() == (ids[1], ids[2])
    # The list beside the 2-up button, and a focused thumbnail with Shift+Enter.
    page.select_option("#compare-select", str(ids[3]))
    page.wait_for_selector(f"#viewer-1[data-image='{ids[3]}']")
    page.focus(f"#thumb-{ids[0]}")
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(f"#viewer-1[data-image='{ids[0]}']")
    assert panes() == (ids[1], ids[0])
    assert page.evaluate("window.__notReloaded === true")
    # The help overlay says how.
    page.focus("#viewer-0")
    page.keyboard.press("?")
    help_text = page.inner_text("#help")
    assert "second pane" in help_text and "{ / }" in help_text and "Shift+click" in help_text
    shots = screenshot_dir()
    if shots:
        page.keyboard.press("Escape")
        page.screenshot(path=str(shots / "review-2up-chosen.png"))
    watched.assert_clean()
