"""Every page a clinician or an admin works in meets WCAG 2.1 A and AA as axe-core checks it (labels,
contrast, names of links and buttons, landmarks, ARIA), in the light theme and the dark reading-room theme,
with real content on it: a study with boxes and the override form open, a case for the second reader, a
reviewed case on the audit page, two model versions compared, the monitoring table filled.

axe-core comes inside the `axe-playwright-python` wheel (nothing is downloaded). Hospitals buy against
WCAG 2.1 AA (EN 301 549, Section 508); a failing rule names the element and what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from radiology import services
from radiology.governance.monitoring import monitoring_refresh
from radiology.governance.registry import model_version_register
from radiology.models import Radiograph
from tests.browser.conftest import Watched, predicted_study, sign_in
from tests.conftest import IMAGES
from tests.factories import AdminFactory, ClinicianFactory
from tests.governance.test_registry import _reviewed_cases
from worker.governance_tasks import refresh_comparisons

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FRACTURED = "fracatlas_fractured_IMG0000480.jpg"
NORMAL = "fracatlas_not_fractured_IMG0000263.jpg"


def _violations(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_21_AA}}).response["violations"]
    return [
        f"{page.url} [{rule['id']}, {rule['impact']}] {rule['help']}: {node['target']} - "
        + " ".join(node["failureSummary"].split())
        for rule in found
        for node in rule["nodes"]
    ]


@pytest.fixture
def populated(live_server: Any, tiny_model_dir: Path, shadow_model_dir: Path) -> dict[str, int]:
    reader = ClinicianFactory.create(username="a11y.reader")
    ClinicianFactory.create(username="a11y.second")
    AdminFactory.create(username="a11y.admin")
    box = {"x0": 40.0, "y0": 60.0, "x1": 160.0, "y1": 170.0, "score": 0.9}
    study = predicted_study(reader, "A11Y-1", [FRACTURED, NORMAL], [0.92, 0.4], boxes={FRACTURED: [box]})
    disputed = predicted_study(reader, "A11Y-2", [FRACTURED], [0.95])
    with transaction.atomic():  # an override against a confident band: a case for the second reader
        services.review_submit(
            radiograph_id=Radiograph.objects.get(study=disputed).pk,
            reviewer=reader,
            decision="override",
            final_label="not_fractured",
            reason_code="false_alarm",
        )
    model_version_register(path=tiny_model_dir, status="active")
    model_version_register(path=shadow_model_dir, status="shadow")
    _reviewed_cases(12, active_good=True, shadow_good=False)
    refresh_comparisons()
    monitoring_refresh()
    return {"study": study.pk}


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_meets_wcag_21_aa(
    live_server: Any, open_page: Any, populated: dict[str, int], theme: str
) -> None:
    base = live_server.url
    problems: list[str] = []

    def audit(watched: Watched, path: str | None = None) -> None:
        if path is not None:
            watched.page.goto(f"{base}{path}")
            watched.page.wait_for_load_state("networkidle")
        # The theme is applied (a dark page is checked against its own colours); Django's admin follows the
        # system's preference itself ("auto").
        assert watched.page.get_attribute("html", "data-theme") in (theme, "auto")
        problems.extend(_violations(watched.page))

    signed_out = open_page()
    signed_out.page.emulate_media(color_scheme=theme)
    audit(signed_out, "/accounts/login/")
    signed_out.page.fill("#id_username", "a11y.reader")
    signed_out.page.fill("#id_password", "not the password")
    signed_out.page.click("button[type=submit]")
    signed_out.page.wait_for_selector("p.error[role=alert]")
    audit(signed_out)  # the refusal, with its message

    clinician = open_page()
    clinician.page.emulate_media(color_scheme=theme)
    sign_in(clinician, base, "a11y.reader")
    for path in ("/queue/", "/adjudications/"):
        audit(clinician, path)
    audit(clinician, "/studies/new/")
    page = clinician.page
    page.fill("#id_accession_number", "A11Y-REFUSED")
    page.set_input_files("#id_files", str(IMAGES.parent / "bad" / "truncated.png"))
    page.click("#upload-button")
    page.wait_for_selector("#rejected-list li")  # the refused file, with its reason
    audit(clinician)
    # The refusal's 400 is the answer the form shows, not a fault of the page.
    clinician.problems = [p for p in clinician.problems if "status of 400" not in p]
    missing = open_page()  # its 404 is the page's point, not a problem of the page
    missing.page.emulate_media(color_scheme=theme)
    sign_in(missing, base, "a11y.reader")
    audit(missing, "/no-such-page/")
    audit(missing, "/reader/settings/")  # a form's target visited: its 405 page
    audit(clinician, f"/studies/{populated['study']}/")
    page.wait_for_selector("#viewer-0[data-ready=yes]")
    page.keyboard.press("b")  # the boxes, with their numbers
    page.keyboard.press("o")  # the override form
    page.wait_for_selector("#viewer-0 svg.boxes rect.box")
    audit(clinician)
    page.keyboard.press("Escape")
    page.keyboard.press("2")  # two images side by side
    page.wait_for_selector("#viewer-1[data-ready=yes]")
    audit(clinician)
    page.keyboard.press("?")  # the keyboard help
    audit(clinician)

    admin = open_page()
    admin.page.emulate_media(color_scheme=theme)
    sign_in(admin, base, "a11y.admin")
    for path, filled in (
        ("/audit/", "No fracture where the model saw one"),  # the override, among the reasons
        ("/audit/models/", "Active tiny-test against shadow tiny-shadow"),
        ("/audit/monitoring/", "Reliability diagram of tiny-test"),
        ("/admin/radiology/auditevent/", "(none)"),  # the blank target type's filter link has a name
    ):
        audit(admin, path)
        assert filled in admin.page.content(), f"{path} is not filled: the check would be of an empty page"

    assert not problems, f"{len(problems)} WCAG 2.1 AA problems ({theme} theme):\n" + "\n".join(problems)
    for watched in (signed_out, clinician, admin):
        watched.assert_clean()
