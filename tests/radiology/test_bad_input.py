"""The bad-input corpus (tests/fixtures/bad/manifest.json): every file gets its specific answer from
ingest, the upload page names it, the worker never crashes on it, and random bytes never get past
ingest as anything but a clean accept or a clean refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from radiology.ingest import IngestError, IngestLimits, ingest_file
from radiology.models import Radiograph, Study
from tests.conftest import FIXTURES, FakePredictor
from tests.factories import RadiographFactory
from worker import tasks

BAD = FIXTURES / "bad"
MANIFEST: dict[str, dict[str, Any]] = json.loads((BAD / "manifest.json").read_text())
LIMITS = IngestLimits(max_bytes=40 * 1024 * 1024, max_pixels=60_000_000, min_side=32)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_ingest_answers_each_corpus_file(name: str) -> None:
    expected = MANIFEST[name]
    data = (BAD / name).read_bytes()
    if expected["accept"]:
        assert ingest_file(name, data, LIMITS).sha256
        return
    with pytest.raises(IngestError) as caught:
        ingest_file(name, data, LIMITS)
    assert caught.value.code == expected["code"]
    assert expected["says"].lower() in caught.value.message.lower()
    assert caught.value.filename == name
    assert "Traceback" not in caught.value.message and "Error" not in caught.value.message


def test_a_60_megabyte_upload_is_refused_with_the_limit_named(clinician_client: Any) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (60 * 1024 * 1024)
    response = clinician_client.post(
        "/studies/new/",
        {
            "mrn": "M1",
            "patient_name": "P",
            "accession_number": "A1",
            "body_region": "hand",
            "files": [ContentFile(big, name="huge.png")],
        },
    )
    assert response.status_code == 400
    assert "huge.png" in response.content.decode()
    assert "limit" in response.content.decode()
    assert not Study.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(n for n, e in MANIFEST.items() if not e["accept"]))
def test_the_upload_page_names_each_refused_file(clinician_client: Any, name: str) -> None:
    response = clinician_client.post(
        "/studies/new/",
        {
            "mrn": "M1",
            "patient_name": "P",
            "accession_number": "A1",
            "body_region": "hand",
            "files": [ContentFile((BAD / name).read_bytes(), name=name)],
        },
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert name in page
    assert "no study was created" in page
    assert not Study.objects.exists()
    assert not Radiograph.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_the_worker_never_crashes_on_a_corpus_file(name: str, fake_predictor: FakePredictor) -> None:
    """Even a file that slipped past ingest (or was damaged in storage) ends in a terminal state."""
    radiograph = RadiographFactory.create(image=ContentFile((BAD / name).read_bytes(), name="stored.bin"))
    tasks.classify_radiograph.apply(args=[radiograph.pk]).get()
    radiograph.refresh_from_db()
    assert radiograph.status in (Radiograph.Status.PREDICTED, Radiograph.Status.FAILED)
    if radiograph.status == Radiograph.Status.FAILED:
        assert radiograph.failure_message and "Traceback" not in radiograph.failure_message


def _valid_samples() -> list[bytes]:
    return [(BAD / n).read_bytes() for n, e in sorted(MANIFEST.items()) if e["accept"]] + [
        (FIXTURES / "images" / "kaggle_fractured_1.jpg").read_bytes()
    ]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_valid_samples())))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "truncate", "insert"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _accepts_or_refuses_cleanly(data: bytes) -> None:
    try:
        image = ingest_file("fuzz.bin", data, LIMITS)
    except IngestError as error:
        assert error.code and error.message
        return
    assert image.width >= LIMITS.min_side and image.height >= LIMITS.min_side
    assert image.format in {"PNG", "JPEG", "DICOM"}


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    _accepts_or_refuses_cleanly(data)


@hypothesis_settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_mutated_images_are_accepted_or_refused_cleanly(data: bytes) -> None:
    _accepts_or_refuses_cleanly(data)


def test_the_corpus_manifest_lists_every_file() -> None:
    on_disk = {p.name for p in Path(BAD).iterdir() if p.name != "manifest.json"}
    assert on_disk == set(MANIFEST)
