"""DICOMweb STOW-RS: POST /dicomweb/studies, multipart/related; type="application/dicom", token auth."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from django.core.cache import cache
from pydicom.uid import CTImageStorage, generate_uid
from rest_framework.test import APIClient

from radiology.dicomnet.models import DicomArrival, DicomInstance
from radiology.dicomnet.stow import warning_header
from radiology.models import Study
from tests.api.conftest import token_client
from tests.dicomnet import factory

pytestmark = pytest.mark.django_db

URL = "/dicomweb/studies"


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    cache.clear()


def multipart(*parts: bytes, part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = f"b-{uuid.uuid4().hex}"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(client: Any, *parts: bytes, **kwargs: Any) -> Any:
    body, content_type = multipart(*parts, **kwargs)
    return post_body(client, body, content_type, HTTP_ACCEPT="application/dicom+json")


def post_body(client: APIClient, body: bytes, content_type: str, **headers: str) -> Any:
    # DRF's stubs type a generic request's body as str; the test client sends bytes as they are.
    return client.generic("POST", URL, body, content_type=content_type, **headers)  # type: ignore[arg-type]


def uids(sequence: dict[str, Any]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in sequence.get("Value", [])]


def test_it_stores_every_instance_and_answers_the_standard_response(clinician: Any, file_due: Any) -> None:
    study_uid = generate_uid()
    first = factory.radiograph(study_uid=study_uid, syntax="jpeg_ls_lossless")
    second = factory.radiograph(study_uid=study_uid, modality="CR", syntax="jpeg_baseline")

    response = stow(token_client(clinician), first, second)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    body = json.loads(response.content)
    stored = DicomInstance.objects.order_by("pk")
    assert uids(body["00081199"]) == [i.sop_instance_uid for i in stored]
    assert "00081198" not in body
    assert {i.source for i in stored} == {DicomInstance.Source.STOW_RS}
    assert {i.received_by for i in stored} == {clinician}
    # The same rules as C-STORE: filed as one study after the quiet period.
    file_due()
    assert Study.objects.get().radiographs.count() == 2


def test_a_resent_request_creates_nothing(clinician: Any) -> None:
    data = factory.radiograph()
    client = token_client(clinician)
    assert stow(client, data).status_code == 200
    again = stow(client, data)
    assert again.status_code == 200  # already stored: success, and nothing new
    assert DicomInstance.objects.count() == 1


def test_some_refused_is_202_with_the_failure_reasons(clinician: Any) -> None:
    good = factory.radiograph()
    ct = factory.radiograph(sop_class=CTImageStorage, modality="CT")
    mr = factory.radiograph(modality="MR")
    response = stow(token_client(clinician), good, ct, mr)
    assert response.status_code == 202
    body = json.loads(response.content)
    assert len(body["00081199"]["Value"]) == 1
    failures = body["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failures] == [0x0122, 0xA900]
    assert failures[0]["00081150"]["Value"][0] == CTImageStorage
    assert DicomInstance.objects.count() == 1


def test_nothing_stored_is_409(clinician: Any) -> None:
    response = stow(token_client(clinician), b"\x00" * 500)
    assert response.status_code == 409
    assert json.loads(response.content)["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert DicomArrival.objects.count() == 0
    assert response["Warning"] == (
        '299 testserver: "Part 1 (failure reason 0xC000): The DICOM header is damaged and cannot be read."'
    )


WARN_VALUE = re.compile(r'299 (?P<agent>[^ ]+): "(?P<text>(?:[^"\\]|\\.)*)"')


def warnings(response: Any) -> list[str]:
    """The texts of the Warning header's warn-values (RFC 7234 5.5: code, agent, quoted text)."""
    header = response["Warning"]
    values = list(WARN_VALUE.finditer(header))
    assert ", ".join(m.group(0) for m in values) == header, header  # nothing but well-formed values
    assert {m.group("agent") for m in values} == {"testserver"}
    return [re.sub(r"\\(.)", r"\1", m.group("text")) for m in values]


def test_each_failure_has_a_text_reason_a_sender_can_read(clinician: Any) -> None:
    good = factory.radiograph()
    ct = factory.radiograph(sop_class=CTImageStorage, modality="CT")
    mr = factory.radiograph(modality="MR")
    body, content_type = multipart(good, ct, mr)
    boundary = content_type.rsplit("=", 1)[1]
    # A fourth part that is not DICOM at all.
    body = body.replace(
        f"--{boundary}--".encode(),
        f'--{boundary}\r\nContent-Type: text/plain\r\n\r\nsay "hello"\r\n--{boundary}--'.encode(),
    )
    response = post_body(token_client(clinician), body, content_type, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 202
    texts = warnings(response)
    ct_uid = json.loads(response.content)["00081198"]["Value"][0]["00081155"]["Value"][0]
    assert texts[0] == (
        f"Instance {ct_uid} (failure reason 0x0122): SOP class {CTImageStorage} is not accepted: "
        "only CR and DX radiographs are."
    )
    assert texts[1].endswith("(failure reason 0xA900): Modality MR is not a plain radiograph (CR, DX, DR).")
    assert texts[2] == "Part 4 is text/plain, not application/dicom."
    # The standard codes stay in the FailedSOPSequence, one per failure, in the same order.
    failures = json.loads(response.content)["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failures] == [0x0122, 0xA900, 0xC000]


def test_a_fully_stored_request_has_no_warning(clinician: Any) -> None:
    response = stow(token_client(clinician), factory.radiograph())
    assert response.status_code == 200
    assert "Warning" not in response


def test_the_warning_text_is_safe_ascii_and_bounded() -> None:
    header = warning_header("pacs.example:8000", ["a \u201cquoted\u201d \\ path \u00e9\r\nX: y"] * 25)
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.count("299 pacs.example:8000: ") == 21
    assert header.startswith('299 pacs.example:8000: "a \\"quoted\\" \\\\ path ???X: y"')
    assert header.endswith('"5 more parts failed; see the FailedSOPSequence."')


def test_it_refuses_another_media_type(clinician: Any) -> None:
    client = token_client(clinician)
    response = client.post(URL, {"file": "x"}, format="multipart")
    assert response.status_code == 415
    body, _ = multipart(factory.radiograph())
    response = post_body(client, body, 'multipart/related; type="image/jpeg"; boundary=x')
    assert response.status_code == 415
    assert DicomInstance.objects.count() == 0


def test_a_body_cut_short_is_refused_and_stores_nothing(clinician: Any) -> None:
    body, content_type = multipart(factory.radiograph(), factory.radiograph())
    response = post_body(token_client(clinician), body[: len(body) // 2], content_type)
    assert response.status_code == 400
    assert "closing delimiter" in response.json()["detail"]
    assert DicomInstance.objects.count() == 0


@pytest.mark.parametrize(
    ("role", "status"), [("anonymous", 401), ("outsider", 403), ("clinician", 200), ("admin", 200)]
)
def test_only_clinical_roles_may_store(role: str, status: int, api_for: Any) -> None:
    response = stow(api_for(role), factory.radiograph())
    assert response.status_code == status
    assert DicomInstance.objects.count() == (1 if status == 200 else 0)


def test_get_is_not_allowed(clinician: Any) -> None:
    assert token_client(clinician).get(URL).status_code == 405
