"""How the release fits the two image guardrails on val: the distance threshold flags at most 1 % of val
radiographs, and the colour threshold sits above every val radiograph's colour share."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from classifier.data import Record
from classifier.references import COLOUR_MIN_THRESHOLD, colour_reference, ood_threshold


def test_the_distance_threshold_flags_at_most_one_percent_of_val() -> None:
    rng = np.random.default_rng(0)
    distances = rng.gamma(4.0, 2.0, 1007)
    sources = np.array(["kaggle"] * 500 + ["fracatlas"] * 507)
    # Linear interpolation of the 99 % quantile leaves 11 of 1,007 above it (1.09 %).
    assert np.sum(distances > np.quantile(distances, 0.99)) == 11
    fitted = ood_threshold(distances, sources)
    assert np.sum(distances > fitted["threshold"]) == 10
    assert fitted["in_distribution_flag_rate"] <= 0.01
    assert set(fitted["in_distribution_flag_rate_per_source"]) == {"fracatlas", "kaggle"}


def _record(path: Path, pixels: np.ndarray, split: str) -> Record:
    cv2.imwrite(str(path), pixels)
    return Record(path=path, source="kaggle", split=split, label=0, cluster=path.stem)


def test_the_colour_threshold_sits_above_every_val_radiograph(tmp_path: Path) -> None:
    grey = np.repeat(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(100, axis=0)
    marked = grey.copy()
    marked[:30, :40] = (0, 0, 230)  # a red marker on 6 % of the image (BGR)
    val = [_record(tmp_path / "a.png", grey, "val"), _record(tmp_path / "b.png", marked, "val")]
    test = [_record(tmp_path / "c.png", grey, "test")]
    colour = colour_reference(val, test)
    assert colour["val_max"] == colour["val_max_per_source"]["kaggle"] > 0.05
    assert colour["threshold"] == max(COLOUR_MIN_THRESHOLD, 2 * colour["val_max"])
    assert colour["in_distribution_flag_rate"] == 0.0 and colour["test_flag_rate"] == 0.0
