"""Fracture boxes and the detector's cells: the geometry between them, and when a box finds a fracture.

Cell ``(i, j)`` of the cell head stands for model-input pixels ``[16 i, 16 i + 16) x [16 j, 16 j + 16)``
(see ``classifier.detector``). ``box_mask`` and ``cell_coverage`` turn true boxes into cell targets;
``cells_to_boxes`` and ``cell_peak`` turn cell probabilities back into boxes and a peak on the original
radiograph, through the letterbox. numpy and OpenCV only: the web process and the worker import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifier.preprocessing import Letterbox

CELL_STRIDE = 16
# The cell strides ``classifier.detector`` builds a head for (the recipe's ``--cell-stride``); 16 unless said.
CELL_STRIDES = (16, 8)
# The weight of the cells outside every box of a boxed radiograph (a normal radiograph's cells weigh 1): a
# frame can hold several views with only some of their fractures boxed (the recipe's --boxed-negative-weight).
BOXED_NEGATIVE_WEIGHT = 0.3
# How the cell head's positives are drawn from a box (the recipe's --cell-target): "coverage", the cells more
# than a third inside it; "centre", the cells on its central part (CENTRE_SHARE of its width and height), the
# rest of the box ignored: a head trained so peaks where the pointing game looks, at the box's middle.
CELL_TARGETS = ("coverage", "centre")
CENTRE_SHARE = 1 / 3


@dataclass(frozen=True)
class Box:
    """A fracture box in original-image pixels (x0, y0 inclusive; x1, y1 exclusive) with its score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return {
            "x0": round(self.x0, 1),
            "y0": round(self.y0, 1),
            "x1": round(self.x1, 1),
            "y1": round(self.y1, 1),
            "score": round(self.score, 4),
        }


def box_mask(
    geometry: Letterbox, boxes: Sequence[tuple[float, float, float, float]], *, share: float = 1.0
) -> np.ndarray:
    """uint8 (S, S): 1 on the model-input pixels inside any box (boxes as cx, cy, w, h fractions); with
    ``share`` < 1, inside the central part of each box (that share of its width and height, one pixel at
    least)."""
    mask = np.zeros((geometry.size, geometry.size), np.uint8)
    for cx, cy, w, h in boxes:
        x0, y0, x1, y1 = geometry.box_to_model(cx, cy, w * share, h * share)
        if share < 1.0:
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            x0, x1 = min(x0, mx - 0.5), max(x1, mx + 0.5)
            y0, y1 = min(y0, my - 0.5), max(y1, my + 0.5)
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(geometry.size, int(np.ceil(x1))), min(geometry.size, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = 1
    return mask


def cell_coverage(mask: np.ndarray, stride: int = CELL_STRIDE) -> np.ndarray:
    """(S, S) mask -> (S/stride, S/stride) share of each cell's pixels inside a box."""
    size = mask.shape[0]
    n = size // stride
    return mask[: n * stride, : n * stride].reshape(n, stride, n, stride).mean(axis=(1, 3))


def _model_to_original(geometry: Letterbox, x: float, y: float) -> tuple[float, float]:
    sx = geometry.original_width / geometry.content_width
    sy = geometry.original_height / geometry.content_height
    return (x - geometry.left) * sx, (y - geometry.top) * sy


def _region_box(geometry: Letterbox, region: np.ndarray, stride: float, score: float) -> Box | None:
    """The box around a region's cells in original pixels, clipped to the image; None on the padding only."""
    rows, cols = np.nonzero(region)
    x0, y0 = _model_to_original(geometry, cols.min() * stride, rows.min() * stride)
    x1, y1 = _model_to_original(geometry, (cols.max() + 1) * stride, (rows.max() + 1) * stride)
    x0, x1 = max(0.0, x0), min(float(geometry.original_width), x1)
    y0, y1 = max(0.0, y0), min(float(geometry.original_height), y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(x0, y0, x1, y1, score)


def _logits(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def cells_to_boxes(
    cell_probabilities: np.ndarray,
    geometry: Letterbox,
    *,
    threshold: float,
    max_boxes: int = 5,
    always_top: bool = False,
    peak_drop: float | None = None,
) -> list[Box]:
    """Cell probabilities (h, w) -> boxes in original pixels, best first.

    Cells at or above ``threshold`` are grouped into 8-connected regions; each region becomes the box around
    its cells, scored by its highest cell. ``always_top`` returns the best cell's region even below the
    threshold (for the pointing game). Boxes are clipped to the image (the padding is not the image).

    With ``peak_drop`` (in logits), each local peak at or above the threshold makes its own box, around the
    connected cells whose logit lies within ``peak_drop`` of the peak's, best peak first; a peak inside an
    earlier box, or whose cells reach into one (a weaker shoulder around a stronger peak), makes none, so
    boxes never nest. The cell head saturates over a fracture and its surroundings (a fractured
    radiograph has about 33 cells at 0.99 or more), so one region per threshold crossing grows into a box
    much larger than the fracture, whose centre then misses it; measured on the logit, the saturated
    plateau still has its peak.
    """
    import cv2

    probabilities = np.asarray(cell_probabilities, np.float32)
    stride = geometry.size / probabilities.shape[0]
    above = probabilities >= threshold
    if always_top and not above.any():
        above[np.unravel_index(int(np.argmax(probabilities)), probabilities.shape)] = True
    boxes = []
    if peak_drop is None:
        count, labels = cv2.connectedComponents(above.astype(np.uint8), connectivity=8)
        for k in range(1, count):
            region = labels == k
            box = _region_box(geometry, region, stride, float(probabilities[region].max()))
            if box is not None:
                boxes.append(box)
    else:
        logits = _logits(probabilities)
        local_max = logits >= cv2.dilate(logits, np.ones((3, 3), np.uint8))
        peaks = np.argwhere(above & local_max)
        covered = np.zeros(probabilities.shape, bool)
        for row, col in sorted(peaks.tolist(), key=lambda rc: -logits[rc[0], rc[1]]):
            if covered[row, col]:
                continue
            near = (logits >= logits[row, col] - peak_drop) & above
            _, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=8)
            region = labels == labels[row, col]
            overlaps = bool((region & covered).any())
            covered |= region
            if overlaps:
                continue  # it would hold a stronger peak's box: a reader learns nothing new from it
            box = _region_box(geometry, region, stride, float(probabilities[row, col]))
            if box is not None:
                boxes.append(box)
            if len(boxes) >= max_boxes:
                break
    boxes.sort(key=lambda b: -b.score)
    return boxes[:max_boxes]


@dataclass(frozen=True)
class BoxRule:
    """How the released model turns its cells into boxes (the card's ``boxes``), chosen on val."""

    threshold: float
    peak_drop: float | None = None
    max_boxes: int = 5

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> BoxRule:
        boxes = card.get("boxes") or {}
        drop = boxes.get("peak_drop")
        return cls(
            threshold=float(boxes.get("threshold", 0.5)),
            peak_drop=None if drop is None else float(drop),
            max_boxes=int(boxes.get("max_boxes", 5)),
        )

    def boxes(self, cell_probabilities: np.ndarray, geometry: Letterbox) -> list[Box]:
        return cells_to_boxes(
            cell_probabilities,
            geometry,
            threshold=self.threshold,
            max_boxes=self.max_boxes,
            peak_drop=self.peak_drop,
        )

    def describe(self) -> str:
        grouping = (
            "grouped into 8-connected regions, each region's box scored by its best cell"
            if self.peak_drop is None
            else f"one box per local peak, around the connected cells within {self.peak_drop:g} logit of it, "
            "scored by the peak"
        )
        return f"cells at or above {self.threshold:.3g}, {grouping}"


def cell_peak(cell_probabilities: np.ndarray, geometry: Letterbox) -> tuple[float, float]:
    """The centre of the highest cell inside the image content, in original pixels (x, y)."""
    probabilities = np.array(cell_probabilities, np.float32)
    n = probabilities.shape[0]
    stride = geometry.size / n
    centres = (np.arange(n) + 0.5) * stride
    inside_rows = (centres >= geometry.top) & (centres < geometry.top + geometry.content_height)
    inside_cols = (centres >= geometry.left) & (centres < geometry.left + geometry.content_width)
    probabilities[~inside_rows, :] = -np.inf
    probabilities[:, ~inside_cols] = -np.inf
    row, col = np.unravel_index(int(np.argmax(probabilities)), probabilities.shape)
    return _model_to_original(geometry, centres[col], centres[row])


def fraction_boxes_to_pixels(
    boxes: Sequence[tuple[float, float, float, float]], width: int, height: int
) -> list[tuple[float, float, float, float]]:
    """(cx, cy, w, h) fractions (the data sets' YOLO convention) -> (x0, y0, x1, y1) pixels."""
    return [
        ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        for cx, cy, w, h in boxes
    ]


def point_in_box(x: float, y: float, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_hits(predicted: Box, truth: tuple[float, float, float, float], *, min_iou: float = 0.1) -> bool:
    """A predicted box finds a true fracture when they overlap by ``min_iou`` or its centre lies inside.

    A box made of 16-pixel cells is coarse next to a 5-10 %-of-the-side fracture box, so IoU alone would
    miss boxes that a reader sees on the fracture; the centre rule keeps the hit honest for big boxes.
    """
    cx, cy = (predicted.x0 + predicted.x1) / 2, (predicted.y0 + predicted.y1) / 2
    box = (predicted.x0, predicted.y0, predicted.x1, predicted.y1)
    return iou(box, truth) >= min_iou or point_in_box(cx, cy, truth)


def pointing_hits(peaks: Sequence[tuple[float, float]], truths: Sequence[Sequence[tuple]]) -> np.ndarray:
    """Per image: does its peak (x, y) fall inside one of its true boxes (pixels)?"""
    return np.array(
        [any(point_in_box(x, y, t) for t in boxes) for (x, y), boxes in zip(peaks, truths, strict=True)], bool
    )
