"""DX and CR radiographs made in the tests, in any transfer syntax, from a real fixture radiograph.

Uncompressed, RLE, JPEG-LS and JPEG 2000 are encoded by pydicom (with pylibjpeg-rle, pyjpegls and
pylibjpeg-openjpeg); the JPEG family (baseline, extended 12-bit, lossless) by dcmtk's dcmcjpeg, a real
encoder of the kind modalities use.
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import (
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "images" / "kaggle_fractured_1.jpg"

# name -> (transfer syntax, bits stored, lossless)
SYNTAXES: dict[str, tuple[UID, int, bool]] = {
    "explicit_little": (ExplicitVRLittleEndian, 12, True),
    "jpeg_baseline": (JPEGBaseline8Bit, 8, False),
    "jpeg_extended_12bit": (JPEGExtended12Bit, 12, False),
    "jpeg_lossless_sv1": (JPEGLosslessSV1, 12, True),
    "jpeg_ls_lossless": (JPEGLSLossless, 12, True),
    "jpeg_ls_near_lossless": (JPEGLSNearLossless, 12, False),
    "jpeg2000_lossless": (JPEG2000Lossless, 12, True),
    "jpeg2000": (JPEG2000, 12, False),
    "rle": (RLELossless, 12, True),
}
_DCMCJPEG = {
    JPEGBaseline8Bit: ["+eb"],
    JPEGExtended12Bit: ["+ee"],
    JPEGLosslessSV1: ["+e1"],
}


@dataclass(frozen=True)
class Patient:
    mrn: str = "DCM-7001"
    name: str = "Doe^Jane"
    birth_date: str = "19800214"
    sex: str = "F"


def pixels(bits: int, size: int = 256) -> np.ndarray:
    gray = cv2.imread(str(FIXTURE), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise FileNotFoundError(FIXTURE)
    gray = cv2.resize(gray, (size, int(size * gray.shape[0] / gray.shape[1])), interpolation=cv2.INTER_AREA)
    if bits == 8:
        return gray.astype(np.uint8)
    return (gray.astype(np.uint32) * ((1 << bits) - 1) // 255).astype(np.uint16)


def radiograph(
    *,
    syntax: str = "explicit_little",
    modality: str = "DX",
    sop_class: str | None = None,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str = "DCMNET001",
    patient: Patient = Patient(),
    body_part: str = "WRIST",
    size: int = 256,
    bits: int | None = None,
) -> bytes:
    """One DICOM Part 10 radiograph (bytes) in the named transfer syntax (bits stored: the syntax's own
    default unless given)."""
    transfer_syntax, default_bits, _ = SYNTAXES[syntax]
    bits = bits or default_bits
    if sop_class is None:
        sop_class = (
            ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation
        )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid) if sop_uid else generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("radiograph.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[ds.StudyInstanceUID, modality])
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.PatientID = patient.mrn
    ds.PatientName = patient.name
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.AccessionNumber = accession
    ds.StudyDate = dt.date(2026, 11, 2).strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.Manufacturer = "Test modality"
    ds.PatientOrientation = ["L", "F"]
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
    array = pixels(bits, size)
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = array.tobytes()
    if bits > 8:
        ds.WindowCenter = (1 << bits) // 2
        ds.WindowWidth = 1 << bits
    if transfer_syntax in _DCMCJPEG:
        return _dcmcjpeg(ds, _DCMCJPEG[transfer_syntax])
    if transfer_syntax == JPEGLSNearLossless:
        ds.compress(transfer_syntax, jls_error=2, generate_instance_uid=False)
    elif transfer_syntax == JPEG2000:
        ds.compress(transfer_syntax, j2k_cr=[20], generate_instance_uid=False)
    elif transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    return _encode(ds)


def _encode(ds: FileDataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dcmcjpeg(ds: FileDataset, options: list[str]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
        source.write_bytes(_encode(ds))
        subprocess.run(["dcmcjpeg", *options, str(source), str(target)], check=True, capture_output=True)
        return target.read_bytes()


def reference_pixels(data: bytes) -> np.ndarray:
    return dcmread(io.BytesIO(data)).pixel_array


def measurement_report(sr: Dataset) -> hd.sr.MeasurementReport:
    """A TID 1500 SR's content, parsed back by highdicom (whose `content` is typed as the generic sequence)."""
    content = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    assert isinstance(content, hd.sr.MeasurementReport), type(content)
    return content


def evaluation(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: Code) -> hd.sr.CodedConcept:
    """The coded value of the group's first qualitative evaluation called ``name``."""
    value = group.get_qualitative_evaluations(name=name)[0].value
    assert isinstance(value, hd.sr.CodedConcept), type(value)
    return value
