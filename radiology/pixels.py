"""A radiograph's pixels at their own bit depth, for the viewer's window/level.

The review page's window/level works in the image's own units: a 12- or 16-bit DICOM is sent with every
stored level (after its modality LUT), not as the 8-bit picture the server already windowed, so detail
outside the default window is not lost. The browser applies the window (a lookup table) itself.

PNG and JPEG are 8-bit: they are sent as decoded (EXIF orientation applied, the frame the model's boxes
use). The presets come from the image's own histogram because a plain radiograph's levels have no fixed
physical unit (unlike CT's Hounsfield units): "bone" is the bright part of the range, "soft tissue" the
darker part, "full range" everything.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels

from classifier.decoding import UnreadableImageError, decode_grayscale
from radiology.models import Radiograph


@dataclass(frozen=True)
class Window:
    center: float
    width: float

    def as_dict(self) -> dict[str, float]:
        return {"center": round(self.center, 2), "width": round(max(self.width, 1.0), 2)}


@dataclass(frozen=True)
class FullDepth:
    """Pixels as unsigned integers (0..max_value) with how to show them.

    ``offset``: what was added to the modality-LUT values to make them non-negative (stored values =
    modality value + offset). ``invert``: MONOCHROME1, shown inverted by default. ``window``: the file's own
    default (its VOI window, else the full range), in stored units.
    """

    pixels: np.ndarray
    bits: int
    offset: float
    invert: bool
    window: Window
    presets: dict[str, Window] = field(default_factory=dict)

    @property
    def max_value(self) -> int:
        return int(self.pixels.max()) if self.pixels.size else 0

    def header(self) -> dict[str, object]:
        height, width = self.pixels.shape
        return {
            "width": int(width),
            "height": int(height),
            "bytes_per_pixel": int(self.pixels.dtype.itemsize),
            "bits": self.bits,
            "max_value": self.max_value,
            "offset": self.offset,
            "invert": self.invert,
            "window": self.window.as_dict(),
            "presets": {name: window.as_dict() for name, window in self.presets.items()},
        }

    def body(self) -> bytes:
        """Little-endian pixels, row by row, gzip-compressed (fast level: this is per request)."""
        return gzip.compress(
            self.pixels.astype(self.pixels.dtype.newbyteorder("<")).tobytes(), compresslevel=1
        )


class PixelsUnavailable(Exception):
    """The stored file is missing or cannot be decoded (the message says which, for people)."""


def radiograph_full_depth(radiograph: Radiograph) -> FullDepth:
    try:
        with radiograph.image.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise PixelsUnavailable("The stored image is missing.") from None
    try:
        if radiograph.format == Radiograph.Format.DICOM:
            return _dicom_full_depth(data)
        pixels = decode_grayscale(data)
    except UnreadableImageError as exc:
        raise PixelsUnavailable(str(exc)) from None
    return _with_presets(pixels.astype(np.uint8), bits=8, offset=0.0, invert=False, window=None)


def _dicom_full_depth(data: bytes) -> FullDepth:
    dataset = pydicom.dcmread(io.BytesIO(data))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    raw = pydicom.pixels.pixel_array(dataset, index=0 if frames > 1 else None)
    if raw.ndim != 2:
        # Colour DICOM: the 8-bit grey picture is all there is to window.
        return _with_presets(decode_grayscale(data), bits=8, offset=0.0, invert=False, window=None)
    values = np.asarray(pydicom.pixels.apply_modality_lut(raw, dataset), dtype=np.float64)
    low = float(np.floor(values.min())) if values.size else 0.0
    shifted = np.clip(np.rint(values - low), 0, 65535).astype(np.uint16)
    bits = int(dataset.get("BitsStored", 16) or 16)
    window = None
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        try:
            center = float(_first(dataset.WindowCenter)) - low
            width = float(_first(dataset.WindowWidth))
            if width >= 1:
                window = Window(center, width)
        except (TypeError, ValueError):
            window = None
    invert = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1"
    return _with_presets(shifted, bits=bits, offset=-low, invert=invert, window=window)


def _first(value: Any) -> Any:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return value[0]
    return value


def _span(low: float, high: float) -> Window:
    return Window(center=(low + high) / 2.0, width=max(high - low, 1.0))


def _with_presets(
    pixels: np.ndarray, *, bits: int, offset: float, invert: bool, window: Window | None
) -> FullDepth:
    sample = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)].ravel()
    p = np.percentile(sample, [1, 5, 40, 60, 99.5]) if sample.size else np.zeros(5)
    lowest, highest = float(pixels.min()), float(pixels.max())
    full = _span(lowest, highest)
    presets = {
        "full": full,
        # For a radiograph shown MONOCHROME2 bone is bright: the upper part of the histogram. Inverted
        # (MONOCHROME1) files store bone dark, so the two presets swap their halves.
        "bone": _span(p[2], p[4]) if not invert else _span(p[0], p[3]),
        "soft": _span(p[1], p[3]) if not invert else _span(p[2], p[4]),
    }
    presets["default"] = window or full
    return FullDepth(pixels, bits, offset, invert, window or full, presets)


def header_json(full: FullDepth) -> str:
    return json.dumps(full.header(), separators=(",", ":"))
