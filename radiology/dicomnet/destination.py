"""Where results go and how they get there: the configured destination (``DICOM_DESTINATION``) and the
two ways of sending DICOM instances to it, C-STORE as an SCU (pynetdicom) and STOW-RS (DICOMweb).

``send`` either stores every instance or raises ``DeliveryError`` with a message for admins (the
destination and the status it answered, never patient data); which instances to send, and when, is
radiology.dicomnet.delivery's work.
"""

from __future__ import annotations

import base64
import io
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

# C-STORE statuses that mean "stored" (success and the storage warnings: coerced, elements discarded).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """A delivery attempt failed; `message` is stored on the delivery for admins (no patient data)."""


@dataclass(frozen=True)
class Destination:
    kind: str  # "c-store" | "stow-rs"
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    def __str__(self) -> str:
        if self.kind == "stow-rs":
            return f"STOW-RS {self.url}"
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"


def configured_destination(value: str | None = None) -> Destination | None:
    """DICOM_DESTINATION: "AE_TITLE@host:port" or an http(s) DICOMweb base URL; None when empty."""
    value = (settings.DICOM_DESTINATION if value is None else value).strip()
    if not value:
        return None
    if value.startswith(("http://", "https://")):
        return Destination("stow-rs", url=value.rstrip("/"))
    ae_title, at, address = value.partition("@")
    host, colon, port = address.rpartition(":")
    if not (at and colon and ae_title and host and port.isdigit() and len(ae_title) <= 16):
        raise ValueError(f"DICOM_DESTINATION must be AE_TITLE@host:port or a DICOMweb URL, got {value!r}")
    return Destination("c-store", ae_title=ae_title, host=host, port=int(port))


def send(destination: Destination, payloads: Sequence[bytes]) -> None:
    """Store every instance (DICOM Part 10 bytes) at the destination; raises DeliveryError otherwise."""
    if destination.kind == "stow-rs":
        _send_stow(destination, payloads)
    else:
        _send_c_store(destination, payloads)


def _send_c_store(destination: Destination, payloads: Sequence[bytes]) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [pydicom.dcmread(io.BytesIO(payload)) for payload in payloads]
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.DICOM_DELIVERY_TIMEOUT_SECONDS
    ae.connection_timeout = settings.DICOM_DELIVERY_TIMEOUT_SECONDS
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise DeliveryError(f"The association with {destination} was {state}.")
    try:
        for dataset in datasets:
            status = assoc.send_c_store(dataset)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in _STORED:
                reason = "no answer" if code == -1 else f"status 0x{code:04X}"
                comment = str(getattr(status, "ErrorComment", "") or "") if status else ""
                raise DeliveryError(
                    f"{destination} did not store {dataset.SOPClassUID.name}: {reason} {comment}".strip()
                )
    finally:
        if assoc.is_established:
            assoc.release()


def _send_stow(destination: Destination, payloads: Sequence[bytes]) -> None:
    boundary = f"fracture-review-{uuid.uuid4().hex}"
    body = io.BytesIO()
    for payload in payloads:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(payload)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(  # noqa: S310 - the URL is the administrator's DICOM_DESTINATION
        f"{destination.url}/studies",
        data=body.getvalue(),
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    if settings.DICOM_DESTINATION_CREDENTIALS:
        token = base64.b64encode(settings.DICOM_DESTINATION_CREDENTIALS.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=settings.DICOM_DELIVERY_TIMEOUT_SECONDS) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{destination} answered HTTP {exc.code}.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{destination} could not be reached ({exc.__class__.__name__}).") from None
    if status != 200:
        raise DeliveryError(f"{destination} stored only part of the result (HTTP {status}).")
