"""One orientation everywhere: the EXIF-applied frame (what a browser shows and the boxes are drawn in).

Real FracAtlas files that carry EXIF orientation 3, 6 and 8, decoded through both paths (OpenCV's fast path
and Pillow's fall-back), must give the frame Pillow's ``exif_transpose`` gives, and the model's boxes must be
in that frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from classifier import decoding
from classifier.decoding import apply_exif_orientation, decode_grayscale

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
EXIF_FILES = {
    3: "fracatlas_exif3_fractured_IMG0002588.jpg",
    6: "fracatlas_exif6_not_fractured_IMG0000789.jpg",
    8: "fracatlas_exif8_not_fractured_IMG0000439.jpg",
}


def _browser_frame(data: bytes) -> np.ndarray:
    return np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))


@pytest.mark.parametrize("orientation", sorted(EXIF_FILES))
def test_a_real_exif_rotated_jpeg_decodes_in_the_frame_a_browser_shows(orientation: int) -> None:
    data = (FIXTURES / EXIF_FILES[orientation]).read_bytes()
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    decoded = decode_grayscale(data)
    expected = _browser_frame(data)
    assert decoded.shape == expected.shape
    # libjpeg-turbo and Pillow's decoder may differ by a grey level or two, never by a turn.
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 1.0


@pytest.mark.parametrize("orientation", sorted(EXIF_FILES))
def test_both_decode_paths_agree(orientation: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (FIXTURES / EXIF_FILES[orientation]).read_bytes()
    fast = decode_grayscale(data)
    # Force the Pillow fall-back: a decoder that never takes the OpenCV path.
    monkeypatch.setattr(decoding, "_jpeg_is_complete", lambda _data: False)
    slow = decode_grayscale(data)
    assert fast.shape == slow.shape
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 1.0


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_exif_orientation_matches_pillows_transpose(orientation: int, fmt: str) -> None:
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {})
    )
    data = buffer.getvalue()
    np.testing.assert_array_equal(decode_grayscale(data), _browser_frame(data))


def test_a_marker_in_the_top_left_lands_where_each_orientation_says() -> None:
    stored = np.zeros((4, 6), np.uint8)
    stored[0, 0] = 255  # the stored image's top-left pixel
    # Where that pixel is shown (row, col) for each orientation, per the EXIF specification.
    shown_at = {1: (0, 0), 2: (0, 5), 3: (3, 5), 4: (3, 0), 5: (0, 0), 6: (0, 3), 7: (5, 3), 8: (5, 0)}
    for orientation, position in shown_at.items():
        shown = apply_exif_orientation(stored, orientation)
        assert tuple(np.argwhere(shown == 255)[0]) == position, orientation


def test_a_damaged_orientation_value_shows_the_pixels_as_stored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 42  # not an orientation
    buffer = io.BytesIO()
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(pixels).save(buffer, "PNG", exif=exif.tobytes())
    np.testing.assert_array_equal(decode_grayscale(buffer.getvalue()), pixels)
