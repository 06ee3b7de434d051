"""Image files to grayscale pixels: PNG, JPEG, GIF and DICOM, checked, oriented and windowed.

``decode_grayscale`` is how every image file in the system is read (uploads, DICOM arrivals, training data,
the worker): content sniffed, never trusted by name; size and decompression-bomb limits; EXIF orientation
applied; alpha composited over black; DICOM pixel data through its modality and VOI LUT, MONOCHROME1
inverted. The result, a uint8 grayscale array, becomes the model's input in :mod:`classifier.preprocessing`.
This module is imported by the web process: it must only import numpy, OpenCV, Pillow and pydicom.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import cv2
import numpy as np
import pydicom
import pydicom.encaps
import pydicom.errors
import pydicom.uid
from PIL import Image, ImageFile, UnidentifiedImageError

# Truncated images must fail loudly; a half-decoded radiograph (grey bottom half) is not a radiograph.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# One decoding thread per call: the worker and the training pipeline parallelise across images.
cv2.setNumThreads(1)

__all__ = [
    "UnreadableImageError",
    "apply_exif_orientation",
    "decode_grayscale",
    "sniff_format",
]


class UnreadableImageError(ValueError):
    """The bytes are not an image this system can read.

    The message is written for a clinician: it names the problem in plain words, never a library's
    exception text, so callers may show ``str(error)`` to users.
    """


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GIF_MAGICS = (b"GIF87a", b"GIF89a")


def sniff_format(data: bytes) -> str | None:
    """Return "PNG", "JPEG", "GIF" or "DICOM" from the leading bytes, or None for anything else."""
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_GIF_MAGICS):
        return "GIF"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    return None


def decode_grayscale(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode PNG, JPEG, GIF (first frame) or DICOM bytes to a 2-D uint8 grayscale array (H, W).

    Any Pillow mode is accepted (L, LA, RGB, RGBA, P, I;16, I, F, CMYK, 1...): colour is reduced to
    luma (ITU-R 601), transparency is composited over black, 16/32-bit and float data are stretched
    linearly from their minimum to their maximum. DICOM pixel data go through the modality LUT, then
    the VOI LUT or window, MONOCHROME1 is inverted, and the result is scaled to 0..255.

    ``max_pixels`` bounds width x height, checked from the header before any pixel is decoded
    (decompression bombs). Raises :class:`UnreadableImageError` with a message fit for a clinician.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode_grayscale expects bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise UnreadableImageError("The file is empty.")
    kind = sniff_format(data)
    if kind is None:
        raise UnreadableImageError("The file is not a PNG, JPEG, GIF or DICOM image.")
    if kind == "DICOM":
        return _decode_dicom(data, max_pixels)
    return _decode_raster(data, kind, max_pixels)


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableImageError("The image has no pixels.")
    if max_pixels is not None and width * height > max_pixels:
        raise UnreadableImageError(
            f"The image is too large: {width} x {height} pixels is more than the limit of "
            f"{max_pixels:,} pixels."
        )


def _jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG ends with its end-of-image marker (trailing padding allowed).

    OpenCV decodes a truncated JPEG into a partly grey image with only a warning; only complete files
    take the fast OpenCV path, the rest go through Pillow, which raises on truncation.
    """
    tail = data[-64:].rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def _decode_raster(data: bytes, kind: str, max_pixels: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError("The image is too large to open safely.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImageError("The image header is damaged or incomplete.") from exc

    width, height = image.size
    _check_size(width, height, max_pixels)

    # Fast path: OpenCV's libjpeg-turbo / libpng decode straight to grayscale, a little faster than
    # Pillow. Only for plain modes, where both agree on the result to within rounding.
    # One orientation everywhere: the EXIF-applied frame, the one a browser shows and the fracture boxes
    # of the data sets are drawn in. Both decoders read the stored pixels; the turn is applied here once.
    orientation = _exif_orientation(image)
    fast = (kind == "JPEG" and image.mode in ("L", "RGB", "YCbCr") and _jpeg_is_complete(data)) or (
        kind == "PNG" and image.mode in ("L", "RGB") and "transparency" not in image.info
    )
    if fast:
        flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
        array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if array is not None and array.shape == (height, width):
            return apply_exif_orientation(np.ascontiguousarray(array, dtype=np.uint8), orientation)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)  # GIF / APNG: the first frame
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError("The image is too large to open safely.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImageError("The image data is truncated or corrupt.") from exc
    return apply_exif_orientation(_pil_to_gray(image), orientation)


EXIF_ORIENTATION_TAG = 0x0112


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of a raster image; 1 (as stored) when absent or unreadable."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return 1  # a damaged EXIF block: show the pixels as stored, as browsers do
    return value if 1 <= value <= 8 else 1


def apply_exif_orientation(gray: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> the frame EXIF ``orientation`` asks for (what Pillow's ``exif_transpose`` does)."""
    turned = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1, :],  # mirrored top-bottom
        5: lambda a: a.T,  # transposed
        6: lambda a: np.rot90(a, -1),  # stored rotated 90 counter-clockwise: turn clockwise
        7: lambda a: a[::-1, ::-1].T,  # transverse
        8: lambda a: np.rot90(a, 1),  # stored rotated 90 clockwise: turn counter-clockwise
    }[orientation](gray)
    return np.ascontiguousarray(turned)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the range [min, max] linearly onto 0..255; a constant image becomes 0."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, 0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def _composite_over_black(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    mixed = gray.astype(np.uint16) * alpha.astype(np.uint16) + 127
    return (mixed // 255).astype(np.uint8)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "L":
        return np.array(image, dtype=np.uint8)
    if mode == "1":
        return np.array(image.convert("L"), dtype=np.uint8)
    if mode == "LA":
        array = np.array(image, dtype=np.uint8)
        return _composite_over_black(array[..., 0], array[..., 1])
    if mode == "RGB":
        return _rgb_to_gray(np.array(image))
    if mode in ("RGBA", "RGBa"):
        array = np.array(image.convert("RGBA"), dtype=np.uint8)
        return _composite_over_black(_rgb_to_gray(array[..., :3]), array[..., 3])
    if mode.startswith("I") or mode == "F":
        # I;16, I;16B, I;16L, I (32-bit), F: high bit depth, stretch to the full 8-bit range.
        return _stretch_to_uint8(np.array(image))
    # CMYK, YCbCr, LAB, HSV...: Pillow knows how to get to RGB (inverted Adobe CMYK included).
    return _rgb_to_gray(np.array(image.convert("RGB")))


def _decode_dicom(data: bytes, max_pixels: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(io.BytesIO(data))
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableImageError("The DICOM file is damaged or incomplete.") from exc
    except Exception as exc:  # pydicom raises a wide range of errors on malformed elements
        raise UnreadableImageError("The DICOM file is damaged or incomplete.") from exc
    if any("End of file reached" in str(w.message) for w in warned):
        # pydicom keeps what it read before the end: say "cut short", not "no image".
        raise UnreadableImageError(
            "The DICOM file is incomplete: it ends before its image data does (truncated)."
        )

    if (
        "PixelData" not in dataset
        and "FloatPixelData" not in dataset
        and "DoubleFloatPixelData" not in dataset
    ):
        raise UnreadableImageError("The DICOM file holds no image (it has no pixel data).")
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UnreadableImageError("The DICOM file does not say how large its image is.") from exc
    _check_size(columns, rows, max_pixels)
    if not _first_frame_ends_with_its_marker(dataset):
        syntax = _transfer_syntax_name(dataset)
        raise UnreadableImageError(f"The DICOM image data ({syntax}) stops before its end marker (truncated)")

    try:
        # Only the first frame of a multi-frame object: one radiograph per upload.
        pixels = pydicom.pixels.pixel_array(dataset, index=0 if _frame_count(dataset) > 1 else None)
    except (NotImplementedError, RuntimeError) as exc:
        syntax = _transfer_syntax_name(dataset)
        # pydicom says NotImplementedError, or RuntimeError "...missing dependencies", when no decoder
        # exists here; a RuntimeError from decoders that exist but failed means broken data.
        if isinstance(exc, NotImplementedError) or "missing dependencies" in str(exc):
            raise UnreadableImageError(
                f"The DICOM image is compressed in a format this system cannot decode ({syntax})."
            ) from exc
        raise UnreadableImageError(f"The DICOM image data ({syntax}) is truncated or corrupt.") from exc
    except Exception as exc:
        raise UnreadableImageError("The DICOM image data is truncated or corrupt.") from exc

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        # Colour DICOM (RGB, or YBR already converted to RGB by pydicom): to 8-bit, then luma.
        rgb = pixels[..., :3]
        if rgb.dtype != np.uint8:
            rgb = _stretch_to_uint8(rgb)
        return _rgb_to_gray(rgb)
    if pixels.ndim != 2:
        raise UnreadableImageError("The DICOM image has an unsupported layout.")

    try:
        values = pydicom.pixels.apply_modality_lut(pixels, dataset)
        return _apply_voi_to_uint8(values, dataset, photometric)
    except UnreadableImageError:
        raise
    except Exception as exc:
        raise UnreadableImageError("The DICOM file's display settings (LUT or window) are invalid.") from exc


# JPEG (baseline, extended, lossless), JPEG-LS and JPEG 2000 codestreams all end with FF D9 (EOI / EOC).
_MARKER_ENDED_SYNTAXES = frozenset(
    (
        *pydicom.uid.JPEGTransferSyntaxes,
        *pydicom.uid.JPEGLSTransferSyntaxes,
        *pydicom.uid.JPEG2000TransferSyntaxes,
    )
)


def _first_frame_ends_with_its_marker(dataset: pydicom.Dataset) -> bool:
    """False when the decoded frame's codestream lacks its end marker.

    Some decoders return half an image from a codestream cut short instead of failing (libjpeg does, for
    JPEG-LS), so a truncated upload or network instance would otherwise be classified as if it were whole.
    """
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax not in _MARKER_ENDED_SYNTAXES or "PixelData" not in dataset:
        return True
    try:
        frame = next(
            pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=_frame_count(dataset))
        )
    except Exception:  # a broken encapsulation: the decoder below names what is wrong
        return True
    # An odd-length frame is padded with one 0x00 byte to an even length (PS3.5 A.4).
    return frame.rstrip(b"\x00").endswith(b"\xff\xd9")


def _frame_count(dataset: pydicom.Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _transfer_syntax_name(dataset: pydicom.Dataset) -> str:
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return "unknown transfer syntax"
    name = getattr(syntax, "name", "") or str(syntax)
    return str(name)


def _first_number(value: Any) -> float:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0]
    return float(value)


def _apply_voi_to_uint8(values: np.ndarray, dataset: pydicom.Dataset, photometric: str) -> np.ndarray:
    """VOI LUT sequence, else window centre/width (DICOM PS3.3 C.11.2.1.2), else min-max; 0..255."""
    if "VOILUTSequence" in dataset and len(dataset.VOILUTSequence) > 0:
        out = _stretch_to_uint8(pydicom.pixels.apply_voi_lut(values, dataset, index=0, prefer_lut=True))
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        center = _first_number(dataset.WindowCenter)
        width = _first_number(dataset.WindowWidth)
        function = str(dataset.get("VOILUTFunction", "LINEAR")).upper()
        out = _window_to_uint8(np.asarray(values, dtype=np.float64), center, width, function)
    else:
        out = _stretch_to_uint8(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _window_to_uint8(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    if function == "SIGMOID":
        if width <= 0:
            raise UnreadableImageError("The DICOM window width is not positive.")
        scaled = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise UnreadableImageError("The DICOM window width is not positive.")
        scaled = ((values - center) / width + 0.5) * 255.0
    else:
        if width < 1:
            raise UnreadableImageError("The DICOM window width is below 1.")
        scaled = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
