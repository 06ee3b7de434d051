"""Ingest decides by content, enforces limits before decoding, and explains every refusal."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from radiology.ingest import IngestError, IngestLimits, clean_filename, ingest_file, sniff_format
from tests.conftest import fixture_bytes

LIMITS = IngestLimits(max_bytes=5 * 1024 * 1024, max_pixels=30_000_000, min_side=32)


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def _refusal(name: str, data: bytes, limits: IngestLimits = LIMITS) -> IngestError:
    with pytest.raises(IngestError) as caught:
        ingest_file(name, data, limits)
    assert caught.value.filename  # every refusal names its file
    assert caught.value.message
    return caught.value


def test_it_accepts_a_real_jpeg_and_records_its_facts() -> None:
    data = fixture_bytes("images/kaggle_fractured_1.jpg")
    image = ingest_file("wrist.jpg", data, LIMITS)
    assert image.format == "JPEG"
    assert (image.width, image.height) == Image.open(io.BytesIO(data)).size
    assert len(image.sha256) == 64
    assert image.content == data
    assert image.dicom_attributes == {}


def test_it_accepts_rgba_png() -> None:
    image = ingest_file("x.png", fixture_bytes("images/kaggle_fractured_rgba.png"), LIMITS)
    assert image.format == "PNG"


def test_format_comes_from_content_not_the_name() -> None:
    png = _png(np.full((64, 80), 120, np.uint8))
    image = ingest_file("looks-like.jpg", png, LIMITS)
    assert image.format == "PNG"
    assert (image.width, image.height) == (80, 64)


def test_it_accepts_16_bit_png() -> None:
    array = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    image = ingest_file("deep.png", _png(array), LIMITS)
    assert image.format == "PNG"


def test_it_accepts_cmyk_jpeg() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (64, 64), (10, 20, 30, 40)).save(buffer, format="JPEG")
    assert ingest_file("cmyk.jpg", buffer.getvalue(), LIMITS).format == "JPEG"


def test_it_rejects_an_empty_file() -> None:
    assert _refusal("empty.png", b"").code == "empty_file"


def test_it_rejects_a_text_file_named_png() -> None:
    error = _refusal("notes.png", b"this is not an image\n" * 10)
    assert error.code == "unsupported_format"
    assert "PNG, JPEG or DICOM" in error.message


def test_it_rejects_a_truncated_jpeg_from_the_dataset() -> None:
    error = _refusal("cut.jpg", fixture_bytes("images/kaggle_truncated.jpg"))
    assert error.code == "unreadable_image"


def test_it_rejects_a_truncated_png() -> None:
    data = fixture_bytes("images/kaggle_fractured_rgba.png")
    assert _refusal("cut.png", data[: len(data) // 2]).code == "unreadable_image"


def test_it_rejects_gif() -> None:
    error = _refusal("anim.gif", fixture_bytes("images/kaggle_fractured.gif"))
    assert error.code == "unsupported_format"
    assert "GIF" in error.message


def test_it_rejects_a_file_over_the_byte_limit_before_reading_it() -> None:
    limits = IngestLimits(max_bytes=1000, max_pixels=LIMITS.max_pixels, min_side=32)
    error = _refusal("big.jpg", fixture_bytes("images/kaggle_fractured_1.jpg"), limits)
    assert error.code == "file_too_large"
    assert "limit" in error.message


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, followed by a tiny compressed stream."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def test_it_rejects_a_decompression_bomb_from_its_header() -> None:
    error = _refusal("bomb.png", _bomb_png(100_000, 100_000))
    assert error.code == "too_many_pixels"


def test_it_rejects_an_image_over_the_pixel_limit() -> None:
    limits = IngestLimits(max_bytes=LIMITS.max_bytes, max_pixels=100 * 100, min_side=32)
    error = _refusal("large.png", _png(np.zeros((200, 200), np.uint8)), limits)
    assert error.code == "too_many_pixels"
    assert "200×200" in error.message


def test_it_rejects_a_one_pixel_image() -> None:
    error = _refusal("dot.png", _png(np.zeros((1, 1), np.uint8)))
    assert error.code == "image_too_small"
    assert "1×1" in error.message


def test_it_reads_dicom_attributes_and_pixels() -> None:
    image = ingest_file("scan.dcm", fixture_bytes("dicom/monochrome2_8bit.dcm"), LIMITS)
    assert image.format == "DICOM"
    attributes = image.dicom_attributes
    assert attributes["PatientID"] == "DCM-0001"
    assert attributes["PatientName"] == "Jane Doe"  # Doe^Jane, as people write it
    assert attributes["PatientBirthDate"] == "1980-02-14"
    assert attributes["AccessionNumber"] == "DCMACC001"
    assert attributes["BodyPartExamined"] == "WRIST"
    assert attributes["Modality"] == "DX"


def test_it_accepts_monochrome1_with_a_voi_window() -> None:
    image = ingest_file("cr.dcm", fixture_bytes("dicom/monochrome1_voi_12bit.dcm"), LIMITS)
    assert image.dicom_attributes["PhotometricInterpretation"] == "MONOCHROME1"


def test_it_rejects_dicom_without_pixel_data() -> None:
    error = _refusal("empty.dcm", fixture_bytes("dicom/no_pixel_data.dcm"))
    assert error.code == "no_pixel_data"


def test_it_rejects_a_compressed_dicom_it_cannot_decode() -> None:
    error = _refusal("jls.dcm", fixture_bytes("dicom/jpeg_ls_compressed.dcm"))
    assert error.code == "unreadable_image"
    assert "compress" in error.message.lower()


def test_it_rejects_a_ct_slice() -> None:
    error = _refusal("ct.dcm", fixture_bytes("dicom/ct_slice.dcm"))
    assert error.code == "not_a_radiograph"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd.png", "passwd.png"),
        ("C:\\Users\\x\\wrist.jpg", "wrist.jpg"),
        ("wr\x00ist.png", "wrist.png"),
        ("", "unnamed"),
        ("..", "unnamed"),
    ],
)
def test_it_cleans_hostile_file_names(given: str, expected: str) -> None:
    assert clean_filename(given) == expected


def test_it_shortens_a_1000_character_name_and_keeps_the_extension() -> None:
    cleaned = clean_filename("a" * 1000 + ".png")
    assert len(cleaned) <= 200
    assert cleaned.endswith(".png")


def test_a_path_traversal_name_never_reaches_storage_as_a_path() -> None:
    image = ingest_file("../../etc/passwd.png", _png(np.full((64, 64), 9, np.uint8)), LIMITS)
    assert image.original_filename == "passwd.png"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"\0" * 128 + b"DICM", "DICOM"),
        (b"GIF89a", "GIF"),
        (b"%PDF", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected
