"""The bad-input corpus through the API: each refused file is named in an RFC 9457 problem with its own
code, each accepted one becomes a radiograph; hostile file names are neutralised, never stored as given."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from radiology.models import Radiograph, Study
from tests.api.conftest import assert_problem, png_bytes, study_form, upload
from tests.conftest import FIXTURES

pytestmark = pytest.mark.django_db

BAD = FIXTURES / "bad"
MANIFEST: dict[str, dict[str, Any]] = json.loads((BAD / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_corpus_file_gets_its_answer(clinician_api: Any, name: str) -> None:
    expected = MANIFEST[name]
    # The form's patient is not the one in the corpus's DICOM headers: filed under it knowingly.
    form = study_form(files=[upload(name, (BAD / name).read_bytes())], confirm_patient_mismatch="true")
    response = clinician_api.post("/api/v1/studies", form, format="multipart")
    if expected["accept"]:
        assert response.status_code == 201, response.content[:300]
        assert response.json()["study"]["radiographs"][0]["original_filename"] == name
        return
    body = assert_problem(response, 422, "files_rejected")
    assert body["errors"] == [
        {"file": name, "code": expected["code"], "message": body["errors"][0]["message"]}
    ]
    assert expected["says"].lower() in body["errors"][0]["message"].lower()
    assert not Study.objects.exists() and not Radiograph.objects.exists()


@pytest.mark.parametrize(
    ("name", "kept_as"),
    [
        ("../../etc/passwd.png", "passwd.png"),  # the path goes, the last segment stays
        ("C:\\Windows\\evil.png", "evil.png"),  # a Windows path too
        ("nul\x00byte.png", "nulbyte.png"),  # control characters dropped
        ("x" * 1000 + ".png", "x" * 190 + ".png"),  # cut to fit, the extension kept
        ("\u202eevil.png", "evil.png"),  # no right-to-left override to disguise the extension
    ],
)
def test_hostile_file_names_are_neutralised(clinician_api: Any, name: str, kept_as: str) -> None:
    """Each hostile name is accepted (the image is fine) with its name made harmless: the uploader's name
    is only a label, and the file is stored under a generated one."""
    response = clinician_api.post(
        "/api/v1/studies", study_form(files=[upload(name, png_bytes())]), format="multipart"
    )
    assert response.status_code == 201, response.content[:300]
    radiograph = Radiograph.objects.get()
    assert radiograph.original_filename == kept_as
    assert re.fullmatch(r"radiographs/[0-9a-f]{32}\.png", radiograph.image.name or "")


def test_a_part_named_dot_dot_is_not_taken_for_a_file(clinician_api: Any) -> None:
    boundary = "b0undary"
    fields = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in study_form().items()
    )
    part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename=".."\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = clinician_api.post(
        "/api/v1/studies", fields + part, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    assert not Study.objects.exists()
