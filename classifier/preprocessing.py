"""The one place where a decoded image becomes a tensor: letterbox, contrast, scale to [0, 1], and back.

Training, evaluation, serving and the worker all call these functions on the grayscale arrays that
:mod:`classifier.decoding` reads from image files, so a model sees exactly the same pixels in production
as it saw in training. This module is imported by the web process: it must only import numpy and OpenCV
(never Keras or TensorFlow).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

# One resizing thread per call: the worker and the training pipeline parallelise across images.
cv2.setNumThreads(1)

__all__ = [
    "PIXEL_SCALE",
    "InputSpec",
    "Letterbox",
    "PreparedImage",
    "letterbox_uint8",
    "model_input_batches",
    "prepare",
    "prepare_batch",
    "to_model_input",
    "unletterbox",
]


@dataclass(frozen=True)
class InputSpec:
    """How a grayscale radiograph becomes the model's input; stored in the model card.

    ``size``: the square side of the model input; the image is scaled so that its longer side fits
    and centred on black padding (aspect preserved, nothing cropped).
    ``clahe``: contrast-limited adaptive histogram equalisation of the scaled image (padding excluded).
    """

    size: int = 224
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"InputSpec.size must be an integer of at least 8, not {self.size!r}")
        if self.clahe_clip_limit <= 0 or self.clahe_tile_grid < 1:
            raise ValueError("InputSpec CLAHE parameters must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            # A card written by a newer preprocessing: refusing is safer than silently differing.
            raise ValueError(f"Unknown input-spec fields {sorted(unknown)}: the model needs newer code")
        return cls(
            size=int(values.get("size", cls.size)),
            clahe=bool(values.get("clahe", cls.clahe)),
            clahe_clip_limit=float(values.get("clahe_clip_limit", cls.clahe_clip_limit)),
            clahe_tile_grid=int(values.get("clahe_tile_grid", cls.clahe_tile_grid)),
        )


@dataclass(frozen=True)
class Letterbox:
    """Where the original image lies inside the square model input (all in pixels)."""

    original_height: int
    original_width: int
    size: int
    top: int
    left: int
    content_height: int
    content_width: int

    def box_to_model(self, cx: float, cy: float, w: float, h: float) -> tuple[float, float, float, float]:
        """A box given as fractions of the original image -> (x0, y0, x1, y1) in model-input pixels."""
        x0 = self.left + (cx - w / 2) * self.content_width
        x1 = self.left + (cx + w / 2) * self.content_width
        y0 = self.top + (cy - h / 2) * self.content_height
        y1 = self.top + (cy + h / 2) * self.content_height
        return x0, y0, x1, y1


@dataclass(frozen=True)
class PreparedImage:
    """``tensor``: float32 (S, S, 1) in [0, 1]; ``letterbox``: the geometry to map maps back."""

    tensor: np.ndarray
    letterbox: Letterbox


def _check_gray(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {gray.dtype}")
    if gray.shape[0] < 1 or gray.shape[1] < 1:
        raise ValueError("the image has no pixels")
    return gray


def letterbox_uint8(gray: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    """Scale the longer side to ``spec.size``, optional CLAHE, centre on black: uint8 (S, S)."""
    gray = _check_gray(gray)
    height, width = gray.shape
    size = spec.size
    scale = size / max(height, width)
    content_h = min(size, max(1, round(height * scale)))
    content_w = min(size, max(1, round(width * scale)))
    if (content_h, content_w) == (height, width):
        content = gray
    else:
        # INTER_AREA averages when shrinking (no aliasing of fine trabecular texture).
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        content = cv2.resize(gray, (content_w, content_h), interpolation=interpolation)
    if spec.clahe:
        clahe = cv2.createCLAHE(
            clipLimit=spec.clahe_clip_limit, tileGridSize=(spec.clahe_tile_grid, spec.clahe_tile_grid)
        )
        content = clahe.apply(np.ascontiguousarray(content))
    top = (size - content_h) // 2
    left = (size - content_w) // 2
    canvas = np.zeros((size, size), np.uint8)
    canvas[top : top + content_h, left : left + content_w] = content
    geometry = Letterbox(height, width, size, top, left, content_h, content_w)
    return canvas, geometry


# The one scaling from a letterboxed uint8 canvas to the model's [0, 1] input; the training pipeline
# (classifier.data, in TensorFlow) multiplies by the same constant.
PIXEL_SCALE = np.float32(1.0 / 255.0)


def to_model_input(canvases: np.ndarray) -> np.ndarray:
    """Letterboxed uint8 canvases, (S, S) or (N, S, S) -> the model's float32 input (..., 1) in [0, 1]."""
    return (np.asarray(canvases).astype(np.float32) * PIXEL_SCALE)[..., None]


def model_input_batches(canvases: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, model input) for consecutive batches of letterboxed uint8 canvases (N, S, S)."""
    for start in range(0, len(canvases), batch_size):
        yield start, to_model_input(canvases[start : start + batch_size])


def prepare(gray: np.ndarray, spec: InputSpec) -> PreparedImage:
    """A decoded grayscale image -> the model's input tensor, float32 (S, S, 1) in [0, 1]."""
    canvas, geometry = letterbox_uint8(gray, spec)
    return PreparedImage(tensor=to_model_input(canvas), letterbox=geometry)


def prepare_batch(images: Sequence[np.ndarray], spec: InputSpec) -> tuple[np.ndarray, list[Letterbox]]:
    """Several images -> one float32 batch (N, S, S, 1) and their letterbox geometries."""
    batch = np.empty((len(images), spec.size, spec.size, 1), np.float32)
    geometries = []
    for i, gray in enumerate(images):
        canvas, geometry = letterbox_uint8(gray, spec)
        # Written in place: no second (N, S, S, 1) float copy of the batch.
        np.multiply(canvas, PIXEL_SCALE, out=batch[i, :, :, 0], casting="unsafe")
        geometries.append(geometry)
    return batch, geometries


def unletterbox(model_map: np.ndarray, geometry: Letterbox, *, max_side: int | None = None) -> np.ndarray:
    """A 2-D map over the model input (any resolution) -> the same map over the original image.

    The map is resized to the model input, the padding is cut away, and the result has the original
    image's aspect ratio at the model's resolution (``max_side`` caps the longer side).
    """
    model_map = np.asarray(model_map, dtype=np.float32)
    if model_map.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {model_map.shape}")
    size = geometry.size
    full = cv2.resize(model_map, (size, size), interpolation=cv2.INTER_LINEAR)
    crop = full[
        geometry.top : geometry.top + geometry.content_height,
        geometry.left : geometry.left + geometry.content_width,
    ]
    if max_side is not None and max(crop.shape) > max_side:
        scale = max_side / max(crop.shape)
        new_w = max(1, round(crop.shape[1] * scale))
        new_h = max(1, round(crop.shape[0] * scale))
        crop = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop, dtype=np.float32)
