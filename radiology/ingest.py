"""Turning an uploaded file into a checked radiograph, or into a clear reason why not.

The format is decided by content (magic bytes), never by the file name or the declared content type.
Size and pixel limits are checked before anything is decoded (decompression bombs); the pixels are then
decoded in full by classifier.preprocessing (the one decoder the worker also uses), so a truncated or
corrupt file is refused here rather than failing later in the worker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydicom
from django.conf import settings
from PIL import Image

from classifier.decoding import UnreadableImageError, decode_grayscale, sniff_format
from radiology.models import BodyRegion, Sex

# Enough of the file to recognise every accepted format (DICOM's magic sits after a 128-byte preamble).
SNIFF_BYTES = 132

# Plain radiography modalities; secondary capture (OT) is accepted because PACS exports often use it.
RADIOGRAPH_MODALITIES = {"CR", "DX", "RG", "RF", "XA", "OT", "PX", "IO", "MG", ""}

# DICOM attributes kept on the radiograph, and offered to pre-fill the study form.
DICOM_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "SeriesNumber",
    "InstanceNumber",
    "Modality",
    "Manufacturer",
    "PhotometricInterpretation",
    "BitsStored",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "TransferSyntaxUID",
)


class IngestError(Exception):
    """A file that cannot be accepted. `message` is written for the clinician who uploaded it."""

    def __init__(self, filename: str, code: str, message: str) -> None:
        super().__init__(f"{filename}: {message}")
        self.filename = filename
        self.code = code
        self.message = message


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int
    max_pixels: int
    min_side: int

    @classmethod
    def from_settings(cls) -> IngestLimits:
        return cls(
            max_bytes=settings.UPLOAD_MAX_FILE_BYTES,
            max_pixels=settings.UPLOAD_MAX_PIXELS,
            min_side=settings.UPLOAD_MIN_SIDE,
        )


@dataclass(frozen=True)
class IngestedImage:
    original_filename: str
    format: str  # a Radiograph.Format value
    content: bytes
    sha256: str
    width: int
    height: int
    dicom_attributes: dict[str, str] = field(default_factory=dict)


_UNSAFE_FILENAME_CHARS = re.compile(r"[\x00-\x1f\x7f<>:\"|?*]")


def clean_filename(name: str) -> str:
    """The uploader's file name made safe to display and store as text (it is never used as a path)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("", name).strip().lstrip(".")
    if len(name) > 200:
        stem, dot, extension = name.rpartition(".")
        name = (stem[:190] + dot + extension[:9]) if dot and len(extension) <= 9 else name[:200]
    return name or "unnamed"


def ingest_file(name: str, data: bytes, limits: IngestLimits, *, size: int | None = None) -> IngestedImage:
    """Check one uploaded file and return what the database will record, or raise IngestError.

    ``size`` is the file's full size when only its first bytes were read (an oversized upload is read
    just past the limit), so the refusal states the real size.
    """
    filename = clean_filename(name)
    if not data:
        raise IngestError(filename, "empty_file", "The file is empty.")
    if len(data) > limits.max_bytes:
        actual = max(len(data), size or 0)
        raise IngestError(
            filename,
            "file_too_large",
            f"The file is {_megabytes(actual)}; the limit is {_megabytes(limits.max_bytes)} per file.",
        )
    image_format = sniff_format(data[:SNIFF_BYTES])
    if image_format is None:
        raise IngestError(
            filename,
            "unsupported_format",
            "This is not a PNG, JPEG or DICOM image (its content was checked, not its name).",
        )
    if image_format == "GIF":
        raise IngestError(
            filename,
            "unsupported_format",
            "GIF images are not accepted: export the radiograph as PNG, JPEG or DICOM.",
        )

    dicom_attributes: dict[str, str] = {}
    if image_format == "DICOM":
        dicom_attributes = _check_dicom_header(filename, data, limits)
    else:
        _check_raster_header(filename, data, limits)

    try:
        pixels = decode_grayscale(data, max_pixels=limits.max_pixels)
    except UnreadableImageError as exc:
        raise IngestError(filename, "unreadable_image", str(exc)) from None
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if min(width, height) < limits.min_side:
        raise IngestError(
            filename,
            "image_too_small",
            f"The image is only {width}×{height} pixels; a radiograph needs at least "
            f"{limits.min_side} pixels on each side.",
        )
    return IngestedImage(
        original_filename=filename,
        format=image_format,
        content=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        dicom_attributes=dicom_attributes,
    )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _too_many_pixels(filename: str, width: int, height: int, limits: IngestLimits) -> IngestError:
    return IngestError(
        filename,
        "too_many_pixels",
        f"The image declares {width}×{height} pixels, more than the limit of "
        f"{limits.max_pixels / 1e6:.0f} megapixels.",
    )


def _check_raster_header(filename: str, data: bytes, limits: IngestLimits) -> None:
    """Read only the header's dimensions: a bomb is refused before a single pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError:
        raise IngestError(
            filename, "too_many_pixels", "The image declares far more pixels than any radiograph."
        ) from None
    except Exception:  # Pillow raises many types for a broken header; the reason shown is the same.
        raise IngestError(
            filename, "unreadable_image", "The image header is damaged and cannot be read."
        ) from None
    if width * height > limits.max_pixels:
        raise _too_many_pixels(filename, width, height, limits)
    if frames > 1:
        raise IngestError(
            filename, "animated_image", "Animated images are not accepted: upload a single radiograph."
        )


def _check_dicom_header(filename: str, data: bytes, limits: IngestLimits) -> dict[str, str]:
    try:
        return _read_dicom_header(filename, data, limits)
    except IngestError:
        raise
    except Exception:  # pydicom parses lazily and raises assorted errors on damaged headers, even late
        raise IngestError(
            filename, "unreadable_image", "The DICOM header is damaged and cannot be read."
        ) from None


def _read_dicom_header(filename: str, data: bytes, limits: IngestLimits) -> dict[str, str]:
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    modality = str(getattr(dataset, "Modality", "") or "").upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise IngestError(
            filename,
            "not_a_radiograph",
            f"This DICOM file is a {modality} image; Fracture Review reads plain radiographs (CR, DX).",
        )
    if "PixelData" not in data_elements(dataset, data):
        raise IngestError(filename, "no_pixel_data", "This DICOM file holds no image (no pixel data).")
    rows, columns = int(getattr(dataset, "Rows", 0) or 0), int(getattr(dataset, "Columns", 0) or 0)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if rows * columns * frames > limits.max_pixels:
        raise _too_many_pixels(filename, columns, rows, limits)
    if frames > 1:
        raise IngestError(
            filename, "multiframe_dicom", "Multi-frame DICOM is not accepted: upload one radiograph per file."
        )
    return _dicom_attributes(dataset)


def data_elements(dataset: Any, data: bytes) -> set[str]:
    """Keywords present in the file, including the pixel data that stop_before_pixels skipped."""
    present = {element.keyword for element in dataset if element.keyword}
    # (7FE0,0010) Pixel Data, little endian, as it appears in the byte stream.
    if b"\xe0\x7f\x10\x00" in data:
        present.add("PixelData")
    return present


def _dicom_attributes(dataset: Any) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for keyword in DICOM_KEYWORDS:
        if keyword == "TransferSyntaxUID":
            value = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        else:
            value = getattr(dataset, keyword, None)
        if value is None or value == "":
            continue
        text = str(value).strip()
        if keyword in {"PatientBirthDate", "StudyDate"}:
            text = _dicom_date(text) or ""
        if keyword == "PatientName":
            text = person_name_display(text)
        if text:
            attributes[keyword] = text[:200]
    return attributes


def person_name_display(value: str) -> str:
    """A DICOM person name as people write it, the order the upload form shows too (static/js/upload.js):
    "Doe^Jane^Q^Dr^Jr" (family^given^middle^prefix^suffix) -> "Dr Jane Q Doe Jr". Only the alphabetic
    group of a multi-group name; a name sent without carets stays as it was. "Doe Jane" (the carets made
    spaces) read as a given name Doe in FHIR's text and beside a typed "Jane Doe" on the same page."""
    from pydicom.valuerep import PersonName

    name = PersonName(value)
    parts = (name.name_prefix, name.given_name, name.middle_name, name.family_name, name.name_suffix)
    return " ".join(" ".join(part.split()) for part in parts if part.strip())


def _dicom_date(value: str) -> str | None:
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date().isoformat()
    except ValueError:
        return None


# --- From DICOM attributes to a study's fields -------------------------------------------------------------


@dataclass(frozen=True)
class DicomStudyFields:
    """What the DICOM attributes say about the patient and the study, in the records' own terms.

    Blank (or None) where the file does not say, or says something the records cannot hold; the upload
    service fills only the fields the clinician left blank from these.
    """

    mrn: str = ""
    patient_name: str = ""
    date_of_birth: dt.date | None = None
    sex: str = ""  # a Sex value
    accession_number: str = ""
    body_region: str = ""  # a BodyRegion value
    study_date: dt.date | None = None


def dicom_study_fields(attributes: Mapping[str, str]) -> DicomStudyFields:
    """Map attributes as IngestedImage.dicom_attributes holds them (dates already ISO) to study fields."""
    return DicomStudyFields(
        mrn=attributes.get("PatientID", "").strip(),
        patient_name=attributes.get("PatientName", "").strip(),
        date_of_birth=_iso_date(attributes.get("PatientBirthDate")),
        sex=_DICOM_SEXES.get(attributes.get("PatientSex", "").strip().upper()[:1], ""),
        accession_number=attributes.get("AccessionNumber", "").strip(),
        body_region=_DICOM_BODY_PARTS.get(attributes.get("BodyPartExamined", "").strip().upper(), ""),
        study_date=_iso_date(attributes.get("StudyDate")),
    )


def _iso_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


_DICOM_SEXES = {"F": Sex.FEMALE, "M": Sex.MALE, "O": Sex.OTHER}

# BodyPartExamined (DICOM PS3.16 Annex L terms and common variants) -> the queue's body regions.
_DICOM_BODY_PARTS = {
    "HAND": BodyRegion.HAND,
    "FINGER": BodyRegion.HAND,
    "WRIST": BodyRegion.WRIST,
    "FOREARM": BodyRegion.FOREARM,
    "ELBOW": BodyRegion.ELBOW,
    "HUMERUS": BodyRegion.HUMERUS,
    "ARM": BodyRegion.HUMERUS,
    "SHOULDER": BodyRegion.SHOULDER,
    "CLAVICLE": BodyRegion.SHOULDER,
    "HIP": BodyRegion.HIP,
    "PELVIS": BodyRegion.PELVIS,
    "FEMUR": BodyRegion.FEMUR,
    "THIGH": BodyRegion.FEMUR,
    "KNEE": BodyRegion.KNEE,
    "LEG": BodyRegion.LEG,
    "LOWER LEG": BodyRegion.LEG,
    "TIBIA": BodyRegion.LEG,
    "ANKLE": BodyRegion.ANKLE,
    "FOOT": BodyRegion.FOOT,
    "TOE": BodyRegion.FOOT,
    "SPINE": BodyRegion.SPINE,
    "CSPINE": BodyRegion.SPINE,
    "TSPINE": BodyRegion.SPINE,
    "LSPINE": BodyRegion.SPINE,
}
