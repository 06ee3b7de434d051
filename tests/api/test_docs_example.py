"""The Python client example in docs/api.md works as written: it is extracted from the document and run
against a live server, while a thread stands in for the Celery worker and stores a prediction for each
queued radiograph (the real worker is exercised by tests/e2e)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from radiology.models import Radiograph
from radiology.roles import ensure_role_groups
from radiology.services import prediction_store
from tests.factories import ClinicianFactory

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def _python_example() -> str:
    """The first Python block that submits a batch, in docs/api.md or (once merged there) README.md."""
    for doc in (ROOT / "docs" / "api.md", ROOT / "README.md"):
        if doc.exists():
            for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
                if "/api/v1/batches" in block:
                    return block
    raise AssertionError("no Python client example found in docs/api.md or README.md")


def _fake_worker(stop: threading.Event) -> None:
    try:
        while not stop.wait(0.2):
            for pk in Radiograph.objects.filter(status=Radiograph.Status.QUEUED).values_list("pk", flat=True):
                prediction_store(
                    radiograph_id=pk,
                    model_version="docs-fake",
                    probability=0.8,
                    label="fractured",
                    band="fracture",
                    threshold=0.5,
                    heatmap_png=None,
                    inference_ms=1.0,
                )
    finally:
        connection.close()


def test_the_documented_python_client_submits_and_collects_results(
    live_server: Any, transactional_db: None, tmp_path: Path
) -> None:
    ensure_role_groups()
    token = Token.objects.create(user=ClinicianFactory.create(username="docs.client")).key
    script = tmp_path / "client.py"
    script.write_text(_python_example())
    stop = threading.Event()
    worker = threading.Thread(target=_fake_worker, args=(stop,))
    worker.start()
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env={**os.environ, "FRACTURE_REVIEW_URL": live_server.url, "FRACTURE_REVIEW_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop.set()
        worker.join()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    images = [p for p in (ROOT / "tests/fixtures/images").iterdir() if p.suffix in {".jpg", ".png", ".gif"}]
    assert f"{len(images) - 2} studies created, 2 failed" in out, out
    assert "kaggle_truncated.jpg unreadable_image" in out and "kaggle_fractured.gif unsupported_format" in out
    assert out.count("fracture     p=0.800 (model docs-fake)") == len(images) - 2, out
    # Each fixture is filed under its own body region (a hip is not a wrist on the clinician's page).
    regions = dict(Radiograph.objects.values_list("original_filename", "study__body_region"))
    assert regions["fracatlas_exif6_not_fractured_IMG0000789.jpg"] == "hip"
    assert regions["fracatlas_fractured_IMG0000480.jpg"] == "leg"
    assert regions["kaggle_fractured_1.jpg"] == "wrist"
