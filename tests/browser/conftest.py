"""Playwright (Python) driving Debian's Chromium against the live server, with a real `celery worker`.

Every page a test opens is watched: console errors, uncaught exceptions and failed requests are collected
and a test fails on any of them (CSP violations show up there too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from radiology import services
from radiology.models import Study
from tests.conftest import IMAGES

# The e2e fixtures: a real worker sharing the live server's database, broker and media folder.
from tests.e2e.conftest import celery_worker, e2e_model_path, worker_env  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls tests make between browser
    # steps are ordinary synchronous calls all the same, so Django's guard against async use must stand down.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Watched:
    """A page plus everything that went wrong on it."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.problems, "browser problems:\n" + "\n".join(self.problems)

    def assert_no_horizontal_scroll(self) -> None:
        width, client = self.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width <= client, f"{self.page.url} scrolls sideways: {width} > {client}"


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make() -> Watched:
        context = chromium.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page)
        page.on(
            "console",
            lambda m: (
                watched.problems.append(f"console {m.type} on {page.url}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: watched.problems.append(f"uncaught on {page.url}: {e}"))
        page.on(
            "requestfailed",
            lambda r: (
                watched.problems.append(f"request failed on {page.url}: {r.url} {r.failure}")
                # A navigation away cancels pending polls and image loads: not an error.
                if "ERR_ABORTED" not in (r.failure or "")
                else None
            ),
        )
        page.set_default_timeout(30_000)
        return watched

    yield make
    for context in contexts:
        context.close()


def sign_in(watched: Watched, base: str, username: str) -> None:
    page = watched.page
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("load")
    assert "/accounts/login/" not in page.url, f"{username} could not sign in"


def screenshot_dir() -> Path | None:
    """Where to save screenshots (UI_SCREENSHOT_DIR), or None to take none."""
    import os

    value = os.environ.get("UI_SCREENSHOT_DIR", "")
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def scale_of(watched: Watched) -> float:
    return float(watched.page.get_attribute("#viewer-0", "data-scale") or 0)


def transform_of(watched: Watched) -> str:
    style = watched.page.get_attribute("#viewer-0 .stage", "style") or ""
    match = re.search(r"transform:\s*([^;]+)", style)
    return match.group(1) if match else ""


# Studies in a given triage state, shared with the web tests.
from tests.web.conftest import make_study  # noqa: E402, F401


def _band(p: float) -> str:
    return "fracture" if p >= 0.7 else "doubt" if p >= 0.3 else "no_fracture"


def predicted_study(
    uploader: Any, accession: str, files: list[str], probabilities: list[float], boxes: Any = None
) -> Study:
    """A study of `files` (from tests/fixtures/images) with a stored prediction per image at `probabilities`
    (bands at 0.3 / 0.7), as a worker would leave it, without running a model."""
    result = services.study_create(
        uploaded_by=uploader,
        details=services.StudyDetails(
            mrn=f"MRN-{accession}",
            patient_name=f"Patient {accession}",
            accession_number=accession,
            body_region="hand",
        ),
        files=[services.UploadedImage(name, (IMAGES / name).read_bytes()) for name in files],
    )
    assert result.study is not None and not result.rejected
    for radiograph, p in zip(result.accepted, probabilities, strict=True):
        assert services.radiograph_claim(radiograph_id=radiograph.pk)
        services.prediction_store(
            radiograph_id=radiograph.pk,
            model_version="browser-model-1",
            probability=p,
            label="fractured" if p >= 0.3 else "not_fractured",
            band=_band(p),
            boxes=(boxes or {}).get(radiograph.original_filename, []),
            threshold=0.3,
            threshold_sensitive=0.3,
            threshold_specific=0.7,
            heatmap_png=None,
            inference_ms=1.0,
        )
    return Study.objects.get(pk=result.study.pk)
