"""Where the model says the fracture is, measured: boxes from the fracture cells, FROC and the pointing game.

A box *finds* a fracture when ``classifier.cells.box_hits`` says so (IoU >= 0.1 or its centre inside the
true box); the pointing game asks whether the best cell's centre lies inside a true box. The box rule (its
threshold and how cells group into boxes, ``classifier.cells.BoxRule``) is chosen on val (the most
fractures found at <= ``FP_PER_IMAGE_TARGET`` false-positive boxes per image), the figures are taken on
test. Used by ``classifier.release``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classifier.cells import (
    Box,
    BoxRule,
    box_hits,
    cell_peak,
    fraction_boxes_to_pixels,
    pointing_hits,
)
from classifier.metrics import wilson_interval
from classifier.scoring import Scored

FP_PER_IMAGE_TARGET = 0.5
MAX_BOXES = 5
# The sweep reaches 0.999: on the boxes source (fractured images only, several lit regions each) the
# false-positive boxes stay above 0.5 per image up to 0.99, so a coarser grid reads no FROC point there.
BOX_THRESHOLDS = (*np.round(np.arange(0.05, 0.96, 0.05), 2), 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
# How cells group into boxes, the candidates of the choice on val: None is one box per region over the
# threshold; a number is one box per peak, around the cells within that many logits of it.
PEAK_DROPS: tuple[float | None, ...] = (None, 0.5, 1.0, 2.0, 3.0)


def truths_of(scored: Scored, idx: Sequence[int]) -> list[list[tuple[float, float, float, float]]]:
    """The true fracture boxes of the images ``idx``, in original pixels."""
    out = []
    for i in idx:
        g = scored.data.geometries[i]
        out.append(fraction_boxes_to_pixels(scored.records[i].boxes, g.original_width, g.original_height))
    return out


def boxes_at(scored: Scored, idx: Sequence[int], rule: BoxRule) -> list[list[Box]]:
    """The model's boxes on the images ``idx`` under a box rule (at most ``rule.max_boxes`` each)."""
    return [rule.boxes(scored.cells[i], scored.data.geometries[i]) for i in idx]


def box_counts(predicted: Sequence[Sequence[Box]], truths: Sequence[Sequence[tuple]]) -> tuple[int, int, int]:
    """(fractures found, fractures, false-positive boxes)."""
    found = fractures = false_positives = 0
    for boxes, image_truths in zip(predicted, truths, strict=True):
        fractures += len(image_truths)
        found += sum(any(box_hits(b, t) for b in boxes) for t in image_truths)
        false_positives += sum(not any(box_hits(b, t) for t in image_truths) for b in boxes)
    return found, fractures, false_positives


def froc_sweep(scored: Scored, idx: Sequence[int], peak_drop: float | None = None) -> list[dict[str, float]]:
    """Fracture-level sensitivity and false-positive boxes per image at every box threshold."""
    truths = truths_of(scored, idx)
    curve = []
    for t in BOX_THRESHOLDS:
        rule = BoxRule(float(t), peak_drop, MAX_BOXES)
        found, fractures, fps = box_counts(boxes_at(scored, idx, rule), truths)
        curve.append(
            {
                "threshold": float(t),
                "sensitivity": found / max(fractures, 1),
                "fp_per_image": fps / max(len(idx), 1),
            }
        )
    return curve


def sensitivity_at(curve: Sequence[dict[str, float]], fp_rate: float) -> dict[str, float]:
    """The FROC point with the most fractures found at or under ``fp_rate`` false-positive boxes per image."""
    allowed = [c for c in curve if c["fp_per_image"] <= fp_rate]
    if not allowed:
        return {"sensitivity": 0.0, "threshold": float("nan"), "fp_per_image": float("nan")}
    best = max(allowed, key=lambda c: (c["sensitivity"], -c["threshold"]))
    return dict(best)


def choose_box_rule(val: Scored, sources: Sequence[str]) -> tuple[BoxRule, dict[str, Any]]:
    """The box rule and the val FROC curves it was chosen on.

    For each grouping in ``PEAK_DROPS``, the lowest threshold whose false-positive boxes stay at or under
    the target on the first source's val (FracAtlas, the one source with normal radiographs: the boxes
    source has no normal images to be wrong on); of the groupings, the one finding the most fractures there
    (ties to the earlier, simpler one); threshold 0.5 where none stays under the target.
    """
    curves: dict[str, dict[str, list[dict[str, float]]]] = {}
    best: tuple[float, BoxRule] | None = None
    for drop in PEAK_DROPS:
        key = "regions" if drop is None else f"peak_drop_{drop:g}"
        curves[key] = {s: froc_sweep(val, [int(i) for i in val.where(s)], drop) for s in sources}
        chosen = sensitivity_at(curves[key][sources[0]], FP_PER_IMAGE_TARGET)
        if np.isfinite(chosen["threshold"]) and (best is None or chosen["sensitivity"] > best[0]):
            best = (chosen["sensitivity"], BoxRule(float(chosen["threshold"]), drop, MAX_BOXES))
    rule = best[1] if best else BoxRule(0.5, None, MAX_BOXES)
    return rule, {"curves": curves, "val_sensitivity_at_target": best[0] if best else None}


def localisation_report(scored: Scored, idx: np.ndarray, rule: BoxRule) -> dict[str, Any]:
    """Pointing game (peak cell inside a box) and FROC on the images of ``idx``."""
    boxed = [int(i) for i in idx if scored.records[i].label == 1 and scored.records[i].boxes]
    peaks = [cell_peak(scored.cells[i], scored.data.geometries[i]) for i in boxed]
    hits = pointing_hits(peaks, truths_of(scored, boxed))
    no_hw = np.array([scored.records[i].hardware == 0 for i in boxed])
    images = [int(i) for i in idx]
    curve = froc_sweep(scored, images, rule.peak_drop)
    found, fractures, fps = box_counts(boxes_at(scored, images, rule), truths_of(scored, images))
    return {
        "images": len(idx),
        "images_with_boxes": len(boxed),
        "pointing_game": {
            "share": float(hits.mean()) if len(hits) else float("nan"),
            "ci": wilson_interval(int(hits.sum()), len(hits)),
            "share_no_hardware": float(hits[no_hw].mean()) if no_hw.any() else float("nan"),
            "images_no_hardware": int(no_hw.sum()),
        },
        "froc": {
            "curve": curve,
            "at_0.5_fp_per_image": sensitivity_at(curve, 0.5),
            "at_1_fp_per_image": sensitivity_at(curve, 1.0),
        },
        "at_box_threshold": {
            "threshold": rule.threshold,
            "peak_drop": rule.peak_drop,
            "sensitivity": found / max(fractures, 1),
            "fractures": fractures,
            "fp_per_image": fps / max(len(idx), 1),
        },
    }
