"""classifier.preprocessing: every format and mode, errors a clinician can read, the tensor's geometry."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from classifier.decoding import UnreadableImageError, decode_grayscale, sniff_format
from classifier.preprocessing import InputSpec, letterbox_uint8, prepare, prepare_batch, unletterbox

# ------------------------------------------------------------------------------------------- helpers


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def radiograph(fixture_bytes: dict[str, bytes]) -> np.ndarray:
    """A real grey radiograph (FracAtlas, 373 x 454)."""
    return decode_grayscale(fixture_bytes["fracatlas_fractured_IMG0000480.jpg"])


def _make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    transfer_syntax: str | None = None,
    encapsulated: bytes | None = None,
    with_pixels: bool = True,
) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    frames = pixels.shape[0] if pixels.ndim == 3 and pixels.shape[-1] not in (3,) else 1
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.Rows, ds.Columns = (pixels.shape[0], pixels.shape[1]) if rgb or pixels.ndim == 2 else pixels.shape[1:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else photometric
    if rgb:
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0, "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = voi_lut.astype("<u2").tobytes()
        item["LUTData"].VR = "OW"
        ds.VOILUTSequence = Sequence([item])
    if with_pixels:
        if encapsulated is not None:
            ds.PixelData = encapsulate([encapsulated])
            ds["PixelData"].VR = "OB"
        else:
            dtype = np.uint8 if rgb else np.uint16
            ds.PixelData = pixels.astype(dtype).tobytes()
    buffer = io.BytesIO()
    if transfer_syntax and transfer_syntax.startswith("1.2.826.0.1.3680043.9.999"):  # a private syntax
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- the fixtures


def test_it_decodes_every_real_fixture_to_2d_uint8(fixture_bytes: dict[str, bytes]) -> None:
    for name, data in fixture_bytes.items():
        gray = decode_grayscale(data)
        image = Image.open(io.BytesIO(data))
        assert gray.dtype == np.uint8, name
        assert gray.shape == (image.height, image.width), name
        assert gray.std() > 5, f"{name} decoded to a flat image"


def test_it_is_deterministic(fixture_bytes: dict[str, bytes]) -> None:
    for data in fixture_bytes.values():
        np.testing.assert_array_equal(decode_grayscale(data), decode_grayscale(data))


def test_it_keeps_pillow_strict_about_truncation() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_it_rejects_a_jpeg_truncated_at_source(truncated_jpeg: bytes) -> None:
    with pytest.raises(UnreadableImageError, match="truncated"):
        decode_grayscale(truncated_jpeg)


@pytest.mark.parametrize("name", ["kaggle_fractured_1.jpg", "fracatlas_fractured_IMG0000480.jpg"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_it_rejects_a_truncated_jpeg(fixture_bytes: dict[str, bytes], name: str, keep: float) -> None:
    data = fixture_bytes[name]
    with pytest.raises(UnreadableImageError):
        decode_grayscale(data[: int(len(data) * keep)])


def test_it_rejects_a_truncated_png(fixture_bytes: dict[str, bytes]) -> None:
    data = fixture_bytes["kaggle_fractured_rgba.png"]
    with pytest.raises(UnreadableImageError):
        decode_grayscale(data[: len(data) // 2])


def test_it_rejects_a_truncated_plain_png(radiograph: np.ndarray) -> None:
    data = _encode(Image.fromarray(radiograph), "PNG")
    with pytest.raises(UnreadableImageError):
        decode_grayscale(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image at all" * 10, "not a PNG, JPEG, GIF or DICOM"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged"),
        (b"\xff\xd8\xff" + b"\0" * 40, "damaged"),
        (b"GIF89a" + b"\0" * 3, "damaged"),
    ],
)
def test_it_explains_unreadable_bytes_in_plain_words(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableImageError, match=message) as info:
        decode_grayscale(data)
    text = str(info.value)
    assert "Traceback" not in text and "Error" not in text and text.endswith(".")


def test_it_accepts_a_jpeg_with_trailing_bytes(fixture_bytes: dict[str, bytes]) -> None:
    data = fixture_bytes["kaggle_fractured_1.jpg"]
    np.testing.assert_array_equal(decode_grayscale(data + b"\0" * 100), decode_grayscale(data))


# ---------------------------------------------------------------------------------- modes and formats


@pytest.mark.parametrize("mode", ["L", "RGB", "1", "P", "I;16", "LA", "RGBA"])
def test_it_decodes_png_in_every_mode(radiograph: np.ndarray, mode: str) -> None:
    base = Image.fromarray(radiograph)
    if mode == "I;16":
        image = Image.fromarray(radiograph.astype(np.uint16) * 257)  # full 16-bit range
        assert image.mode.startswith("I;16")
    elif mode in ("LA", "RGBA"):
        image = base.convert("LA").convert(mode)
    else:
        image = base.convert(mode)
    data = _encode(image, "PNG")
    gray = decode_grayscale(data)
    assert gray.shape == radiograph.shape and gray.dtype == np.uint8
    if mode == "1":
        assert set(np.unique(gray)) <= {0, 255}
    elif mode == "P":
        assert np.abs(gray.astype(int) - radiograph).mean() < 8  # palette quantisation
    elif mode == "I;16":
        # High bit depth is stretched from its minimum to its maximum.
        stretched = np.rint((radiograph - radiograph.min()) * 255.0 / np.ptp(radiograph))
        assert np.abs(gray.astype(int) - stretched).max() <= 1, mode
    else:
        assert np.abs(gray.astype(int) - radiograph).max() <= 1, mode


@pytest.mark.parametrize("mode", ["I", "F"])
def test_it_stretches_32_bit_and_float_modes(radiograph: np.ndarray, mode: str) -> None:
    from classifier.decoding import _pil_to_gray

    values = radiograph.astype(np.int32 if mode == "I" else np.float32) * 1000 - 5000
    gray = _pil_to_gray(Image.fromarray(values, mode))
    stretched = np.rint((radiograph - radiograph.min()) * 255.0 / np.ptp(radiograph))
    assert np.abs(gray.astype(int) - stretched).max() <= 1


def test_it_composites_a_palette_with_a_transparent_entry(radiograph: np.ndarray) -> None:
    image = Image.fromarray(radiograph).convert("P")
    transparent = int(np.asarray(image)[0, 0])
    gray = decode_grayscale(_encode(image, "PNG", transparency=transparent))
    assert gray[np.asarray(image) == transparent].max() == 0
    assert gray.mean() > 10


def test_it_stretches_a_16_bit_png_with_a_narrow_range(radiograph: np.ndarray) -> None:
    twelve_bit = radiograph.astype(np.uint16) * 16  # 0..4080, a typical 12-bit detector
    gray = decode_grayscale(_encode(Image.fromarray(twelve_bit), "PNG"))
    expected = np.rint((twelve_bit - twelve_bit.min()) * 255.0 / np.ptp(twelve_bit))
    assert np.abs(gray.astype(int) - expected).max() <= 1
    assert gray.min() == 0 and gray.max() == 255


def test_it_composites_transparent_pixels_over_black(radiograph: np.ndarray) -> None:
    rgba = np.dstack([radiograph] * 3 + [np.zeros_like(radiograph)])
    rgba[:100, :, 3] = 255
    gray = decode_grayscale(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.abs(gray[:100].astype(int) - radiograph[:100]).max() <= 1
    assert gray[100:].max() == 0


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_it_decodes_jpeg_in_every_mode(radiograph: np.ndarray, mode: str) -> None:
    data = _encode(Image.fromarray(radiograph).convert(mode), "JPEG", quality=95)
    gray = decode_grayscale(data)
    assert gray.shape == radiograph.shape
    assert np.abs(gray.astype(int) - radiograph).mean() < 3, mode


def test_it_matches_pillow_on_rgb_jpeg(fixture_bytes: dict[str, bytes]) -> None:
    data = fixture_bytes["kaggle_fractured_1.jpg"]
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=int)
    assert np.abs(decode_grayscale(data).astype(int) - reference).max() <= 2


def test_it_takes_the_first_frame_of_an_animated_gif(radiograph: np.ndarray) -> None:
    first = Image.fromarray(radiograph).convert("P")
    second = Image.fromarray(255 - radiograph).convert("P")
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    gray = decode_grayscale(buffer.getvalue())
    assert np.abs(gray.astype(int) - radiograph).mean() < 8


def test_it_sniffs_content_not_names(fixture_bytes: dict[str, bytes]) -> None:
    assert sniff_format(fixture_bytes["kaggle_fractured_rgba.png"]) == "PNG"
    assert sniff_format(fixture_bytes["kaggle_fractured.gif"]) == "GIF"
    assert sniff_format(fixture_bytes["kaggle_fractured_1.jpg"]) == "JPEG"
    assert sniff_format(b"BM" + b"\0" * 200) is None


# ----------------------------------------------------------------------------------- pixel-count limit


def test_it_checks_the_pixel_limit_from_the_header_before_decoding(
    radiograph: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _encode(Image.fromarray(radiograph), "PNG")

    def _no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr("cv2.imdecode", _no_decoding)
    monkeypatch.setattr(Image.Image, "load", _no_decoding)
    limit = radiograph.size - 1
    with pytest.raises(UnreadableImageError, match="too large"):
        decode_grayscale(data, max_pixels=limit)


def test_it_rejects_a_decompression_bomb_header() -> None:
    # A valid PNG header for 60000 x 60000 pixels and almost no data: must fail on the header alone.
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
    with pytest.raises(UnreadableImageError, match="too large"):
        decode_grayscale(data, max_pixels=50_000_000)
    with pytest.raises(UnreadableImageError):
        decode_grayscale(data)


def test_it_allows_images_within_the_pixel_limit(radiograph: np.ndarray) -> None:
    data = _encode(Image.fromarray(radiograph), "PNG")
    assert decode_grayscale(data, max_pixels=radiograph.size).shape == radiograph.shape


# ---------------------------------------------------------------------------------------------- DICOM


def test_it_applies_modality_lut_then_window() -> None:
    stored = np.array([[0, 1000, 2000, 3000], [500, 1500, 2500, 4095]], np.uint16)
    # HU = stored * 1 - 1000; window centre 500, width 1001 spans HU 0..1000, i.e. stored 1000..2000.
    data = _make_dicom(stored, slope=1.0, intercept=-1000.0, window=(500.0, 1001.0))
    gray = decode_grayscale(data)
    assert gray.shape == (2, 4) and gray.dtype == np.uint8
    assert gray[0, 0] == 0 and gray[0, 1] == 0  # below the window
    assert gray[0, 2] == 255 and gray[0, 3] == 255  # above the window
    assert 120 <= gray[1, 1] <= 135  # HU 500: the window's centre


def test_it_inverts_monochrome1() -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    normal = decode_grayscale(_make_dicom(stored))
    inverted = decode_grayscale(_make_dicom(stored, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - normal)
    assert normal[0, 0] == 0 and normal[-1, -1] == 255


def test_it_applies_a_voi_lut_sequence() -> None:
    stored = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)
    lut = (np.arange(256) >= 128).astype(np.uint16) * 1000  # a step function
    gray = decode_grayscale(_make_dicom(stored, bits_stored=8, voi_lut=lut))
    assert set(np.unique(gray)) == {0, 255}
    assert gray.reshape(-1)[127] == 0 and gray.reshape(-1)[128] == 255


def test_it_takes_the_first_frame_of_a_multiframe_dicom() -> None:
    frames = np.stack([np.full((8, 8), 100, np.uint16), np.full((8, 8), 4000, np.uint16)])
    frames[0, 0, 0] = 0
    frames[0, 0, 1] = 200
    gray = decode_grayscale(_make_dicom(frames))
    assert gray.shape == (8, 8) and gray[0, 0] == 0 and gray[0, 1] == 255


def test_it_reads_a_colour_dicom(radiograph: np.ndarray) -> None:
    rgb = np.dstack([radiograph] * 3)
    gray = decode_grayscale(_make_dicom(rgb))
    assert np.abs(gray.astype(int) - radiograph).max() <= 1


def test_it_rejects_a_dicom_without_pixel_data() -> None:
    data = _make_dicom(np.zeros((4, 4), np.uint16), with_pixels=False)
    with pytest.raises(UnreadableImageError, match="no pixel data"):
        decode_grayscale(data)


def test_it_explains_an_undecodable_dicom_compression() -> None:
    data = _make_dicom(
        np.zeros((4, 4), np.uint16), transfer_syntax="1.2.826.0.1.3680043.9.999.1", encapsulated=b"x"
    )
    with pytest.raises(UnreadableImageError, match="cannot decode"):
        decode_grayscale(data)


def test_it_rejects_a_broken_jpeg2000_dicom_cleanly() -> None:
    from pydicom.uid import JPEG2000Lossless

    data = _make_dicom(np.zeros((4, 4), np.uint16), transfer_syntax=JPEG2000Lossless, encapsulated=b"\0" * 64)
    with pytest.raises(UnreadableImageError, match="DICOM"):
        decode_grayscale(data)


def test_it_rejects_a_truncated_dicom() -> None:
    data = _make_dicom(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    with pytest.raises(UnreadableImageError, match="DICOM"):
        decode_grayscale(data[: len(data) - 3000])


def test_it_checks_the_dicom_pixel_limit() -> None:
    data = _make_dicom(np.zeros((64, 64), np.uint16))
    with pytest.raises(UnreadableImageError, match="too large"):
        decode_grayscale(data, max_pixels=64 * 64 - 1)


# ---------------------------------------------------------------------------------------- the tensor


def test_input_spec_round_trips_through_a_dict() -> None:
    spec = InputSpec(size=320, clahe=True, clahe_clip_limit=3.0, clahe_tile_grid=4)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="Unknown"):
        InputSpec.from_dict({**spec.to_dict(), "crop": "centre"})


def test_prepare_letterboxes_without_distortion(radiograph: np.ndarray) -> None:
    prepared = prepare(radiograph, InputSpec(size=224))
    tensor, geometry = prepared.tensor, prepared.letterbox
    assert tensor.shape == (224, 224, 1) and tensor.dtype == np.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert (geometry.content_height, geometry.content_width) == (224, round(373 * 224 / 454))
    assert geometry.top == 0 and geometry.left == (224 - geometry.content_width) // 2
    assert (
        tensor[:, : geometry.left].max() == 0
        and tensor[:, geometry.left + geometry.content_width :].max() == 0
    )
    content = tensor[:, geometry.left : geometry.left + geometry.content_width, 0]
    assert content.mean() > 0.1


def test_prepare_is_deterministic_and_matches_the_batch_path(fixture_bytes: dict[str, bytes]) -> None:
    spec = InputSpec(size=96, clahe=True)
    grays = [decode_grayscale(data) for data in fixture_bytes.values()]
    batch, geometries = prepare_batch(grays, spec)
    for i, gray in enumerate(grays):
        one = prepare(gray, spec)
        np.testing.assert_array_equal(one.tensor, batch[i])
        np.testing.assert_array_equal(one.tensor, prepare(gray, spec).tensor)
        assert one.letterbox == geometries[i]


def test_prepare_leaves_a_same_size_image_untouched(fixture_bytes: dict[str, bytes]) -> None:
    gray = decode_grayscale(fixture_bytes["kaggle_fractured_1.jpg"])
    tensor = prepare(gray, InputSpec(size=224)).tensor
    np.testing.assert_array_equal(np.rint(tensor[..., 0] * 255).astype(np.uint8), gray)


def test_clahe_changes_contrast_but_not_the_padding(radiograph: np.ndarray) -> None:
    plain, geometry = letterbox_uint8(radiograph, InputSpec(size=128))
    equalised, same = letterbox_uint8(radiograph, InputSpec(size=128, clahe=True))
    assert geometry == same
    assert not np.array_equal(plain, equalised)
    assert equalised[:, : geometry.left].max() == 0


def test_prepare_rejects_what_is_not_a_grey_uint8_image() -> None:
    with pytest.raises(ValueError, match="2-D"):
        prepare(np.zeros((4, 4, 3), np.uint8), InputSpec(size=32))
    with pytest.raises(ValueError, match="uint8"):
        prepare(np.zeros((4, 4), np.float32), InputSpec(size=32))


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    size=st.sampled_from([32, 64, 224]),
    value=st.integers(1, 255),
)
def test_letterbox_geometry_holds_for_any_shape(height: int, width: int, size: int, value: int) -> None:
    gray = np.full((height, width), value, np.uint8)
    prepared = prepare(gray, InputSpec(size=size))
    g = prepared.letterbox
    assert max(g.content_height, g.content_width) == size
    assert abs(g.content_width / g.content_height - width / height) <= max(
        1 / g.content_height, 1 / g.content_width
    ) * (1 + width / height)
    assert (
        g.top >= 0 and g.top + g.content_height <= size and g.left >= 0 and g.left + g.content_width <= size
    )
    plane = prepared.tensor[..., 0]
    content = plane[g.top : g.top + g.content_height, g.left : g.left + g.content_width]
    np.testing.assert_allclose(content, value / 255, atol=1e-6)
    assert plane.sum() == pytest.approx(content.sum(), rel=1e-5)
    back = unletterbox(np.ones((7, 7), np.float32), g)
    assert back.shape == (g.content_height, g.content_width)


def test_unletterbox_maps_a_spot_back_to_the_original_place(radiograph: np.ndarray) -> None:
    prepared = prepare(radiograph, InputSpec(size=224))
    g = prepared.letterbox
    model_map = np.zeros((224, 224), np.float32)
    # A spot at 30 % across and 60 % down the original image.
    x = round(g.left + 0.3 * g.content_width)
    y = round(g.top + 0.6 * g.content_height)
    model_map[y - 2 : y + 3, x - 2 : x + 3] = 1.0
    back = unletterbox(model_map, g)
    row, col = np.unravel_index(np.argmax(back), back.shape)
    assert abs(col / back.shape[1] - 0.3) < 0.03 and abs(row / back.shape[0] - 0.6) < 0.03


# -------------------------------------------------------------------------------------- import weight


def test_light_modules_do_not_import_keras_or_tensorflow() -> None:
    code = (
        "import sys; import classifier.decoding, classifier.preprocessing, classifier.explain,"
        " classifier.card, classifier.cells, classifier.predict;"
        "heavy = [m for m in ('keras', 'tensorflow', 'torch', 'matplotlib', 'sklearn') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
