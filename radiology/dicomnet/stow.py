"""DICOMweb STOW-RS (PS3.18 10.5): `POST /dicomweb/studies`, `multipart/related; type="application/dicom"`.

Each part goes through the same inbox service as a C-STORE (the same checks, the same idempotency by
SOPInstanceUID, the same quiet period before the study is filed). The answer is the standard store
response: ReferencedSOPSequence for what was stored, FailedSOPSequence with a FailureReason for the rest;
HTTP 200 when all were stored, 202 when some failed, 409 when none could be. Each failure's reason is also
given as text in a `Warning: 299 <service>: "<text>"` header, for a sender that logs only headers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from radiology.api.permissions import IsClinician
from radiology.api.problems import Problem
from radiology.api.throttles import SubmitThrottle, UserThrottle
from radiology.api.views import ApiView
from radiology.dicomnet import inbox
from radiology.dicomnet.listener import REFUSAL_STATUS, STATUS_CANNOT_UNDERSTAND
from radiology.dicomnet.models import DicomInstance

DICOM_JSON = "application/dicom+json"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


class DicomJsonRenderer(JSONRenderer):
    """Lets a client ask for the STOW response as application/dicom+json (PS3.18's media type)."""

    media_type = DICOM_JSON


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related message."""


def parse_content_type(value: str) -> str:
    """The boundary of a `multipart/related; type="application/dicom"` content type, or Problem."""
    media_type = value.split(";", 1)[0].strip().lower()
    part_type = _TYPE.search(value)
    if (
        media_type != "multipart/related"
        or not part_type
        or part_type.group(1).lower() != "application/dicom"
    ):
        raise Problem(
            "unsupported_media_type",
            'Send the instances as multipart/related; type="application/dicom" (DICOMweb STOW-RS).',
            status_code=415,
        )
    boundary = _BOUNDARY.search(value)
    if not boundary:
        raise Problem("bad_request", "The multipart/related content type has no boundary.", status_code=400)
    return boundary.group(1)


def split_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body (RFC 2046 5.1.1) as (headers, content)."""
    delimiter = b"\r\n--" + boundary.encode("ascii", "replace")
    segments = (b"\r\n" + body).split(delimiter)
    if len(segments) < 2:
        raise MultipartError("no part delimited by the boundary")
    parts: list[tuple[dict[str, str], bytes]] = []
    closed = False
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            closed = True
            break
        # After the delimiter: optional transport padding, CRLF, the part's headers, a blank line, content.
        line_end = segment.find(b"\r\n")
        if line_end < 0 or segment[:line_end].strip(b" \t"):
            raise MultipartError("a delimiter is not followed by a line break")
        head, separator, content = segment[line_end + 2 :].partition(b"\r\n\r\n")
        if not separator:
            if segment[line_end + 2 :].startswith(b"\r\n"):  # a part without headers
                head, content = b"", segment[line_end + 4 :]
            else:
                raise MultipartError("a part's headers do not end")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    if not closed:
        raise MultipartError("the closing delimiter is missing (was the body cut short?)")
    return parts


def _sop_item(sop_class_uid: str, sop_instance_uid: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [sop_class_uid]}
    if sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance_uid]}
    item.update(extra)
    return item


@extend_schema(exclude=True)  # DICOMweb is specified by PS3.18, not by this API's OpenAPI document
class StowStudiesApi(ApiView):
    """Store DICOM instances (STOW-RS). Clinicians and admins, by API token."""

    permission_classes = [IsClinician]
    throttle_classes = [UserThrottle, SubmitThrottle]
    renderer_classes = [DicomJsonRenderer, JSONRenderer]
    http_method_names = ["post"]

    def post(self, request: Request) -> HttpResponse:
        boundary = parse_content_type(request.META.get("CONTENT_TYPE", ""))
        try:
            parts = split_parts(request.body, boundary)
        except MultipartError as exc:
            raise Problem(
                "bad_request", f"The multipart/related body is malformed: {exc}.", status_code=400
            ) from None
        if not parts:
            raise Problem("bad_request", "The request holds no DICOM instance.", status_code=400)
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        reasons: list[str] = []
        for number, (headers, content) in enumerate(parts, start=1):
            part_type = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
            if part_type != "application/dicom":
                failed.append(
                    _sop_item("", "", **{"00081197": {"vr": "US", "Value": [STATUS_CANNOT_UNDERSTAND]}})
                )
                reasons.append(f"Part {number} is {part_type}, not application/dicom.")
                continue
            outcome = inbox.dicom_instance_receive(
                data=content, source=DicomInstance.Source.STOW_RS, received_by=request.user
            )
            if outcome.ok:
                stored.append(_sop_item(outcome.sop_class_uid, outcome.sop_instance_uid))
            else:
                reason = REFUSAL_STATUS.get(outcome.reason, STATUS_CANNOT_UNDERSTAND)
                failed.append(
                    _sop_item(
                        outcome.sop_class_uid,
                        outcome.sop_instance_uid,
                        **{"00081197": {"vr": "US", "Value": [reason]}},
                    )
                )
                who = f"Instance {outcome.sop_instance_uid}" if outcome.sop_instance_uid else f"Part {number}"
                reasons.append(f"{who} (failure reason 0x{reason:04X}): {outcome.message}")
        body: dict[str, Any] = {}
        if stored:
            body["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else 202 if stored else 409
        response = HttpResponse(json.dumps(body), status=status, content_type=DICOM_JSON)
        if reasons:
            response["Warning"] = warning_header(request.get_host(), reasons)
        return response


def warning_header(service: str, reasons: list[str], limit: int = 20) -> str:
    """The Warning header field PS3.18 lets an origin server add to a response (RFC 7234 5.5 syntax):
    `299 <service>: "<text>"` per failed part, comma-separated, at most `limit` of them, so a sender can log
    why without decoding the DICOM JSON. The text is printable ASCII, quotes and backslashes escaped."""
    shown = reasons[:limit]
    if len(reasons) > limit:
        shown.append(f"{len(reasons) - limit} more parts failed; see the FailedSOPSequence.")
    return ", ".join(f'299 {_ascii(service)}: "{_quoted(reason)}"' for reason in shown)


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _quoted(text: str) -> str:
    replacements = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-", "\u2014": "-"}
    plain = "".join(replacements.get(c, c) for c in text)
    return _ascii(plain).replace("\\", "\\\\").replace('"', '\\"')
