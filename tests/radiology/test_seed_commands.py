"""The benchmark seeding commands: queued studies held back from the workers, then sent on request."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from radiology.models import Radiograph, Study

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"


def _run(*args: str) -> Any:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_seeding_creates_queued_studies_and_sends_nothing(
    clinician: Any, dispatched: Any, tmp_path: Path
) -> None:
    listing = tmp_path / "images.json"
    images = [FIXTURES / "kaggle_fractured_1.jpg", FIXTURES / "kaggle_not_fractured_1.jpg"]
    listing.write_text(json.dumps([str(p) for p in images]))
    ids = _run("seed_queued_studies", str(listing), "--prefix", "B1", "--uploader", "dr.ada", "--total", "5")
    assert len(ids) == len(set(ids)) == 5
    rows = Radiograph.objects.filter(pk__in=ids)
    assert set(rows.values_list("status", flat=True)) == {Radiograph.Status.QUEUED}
    assert not rows.filter(dispatched_at__isnull=True).exists()  # the sweep leaves them to the benchmark
    assert Study.objects.filter(accession_number__startswith="B1-").count() == 5
    assert dispatched.sent == []


def test_sending_publishes_the_given_ids(dispatched: Any) -> None:
    started = _run("send_classification", "--ids-json", "[3, 1, 2]")
    assert isinstance(started, float)
    assert dispatched.sent == [3, 1, 2]


def test_seeding_refuses_an_unreadable_listing(clinician: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot seed"):
        call_command(
            "seed_queued_studies", str(tmp_path / "missing.json"), "--prefix", "B2", "--uploader", "dr.ada"
        )
