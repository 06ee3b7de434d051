"""classifier.explain: heatmaps as arrays and as RGBA PNG overlays; the pointing game."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifier.explain import (
    cam_to_heatmap,
    heatmap_to_png,
    heatmap_to_stored_png,
    normalise_map,
    overlay,
    overlay_size,
    peak,
    pointing_hit,
    stored_to_overlay_png,
)
from classifier.preprocessing import InputSpec, letterbox_uint8


def _blob(height: int, width: int, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.exp(-(((yy - cy * height) / (0.1 * height)) ** 2 + ((xx - cx * width) / (0.1 * width)) ** 2))


def test_heatmap_png_is_rgba_at_the_requested_size() -> None:
    png = heatmap_to_png(_blob(7, 7, 0.5, 0.5).astype(np.float32), 300, 200)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (300, 200)


def test_heatmap_png_is_transparent_where_the_map_is_low_and_opaque_at_its_peak() -> None:
    heatmap = normalise_map(_blob(64, 48, 0.25, 0.75))
    rgba = np.asarray(Image.open(io.BytesIO(heatmap_to_png(heatmap, 96, 128))))
    assert rgba[-1, 0, 3] == 0  # far from the blob
    assert rgba[32, 72, 3] == 255  # its centre
    assert rgba[32, 72, 0] > rgba[32, 72, 2]  # hot colours at the peak (red over blue)


def test_heatmap_png_rejects_silly_sizes() -> None:
    with pytest.raises(ValueError):
        heatmap_to_png(np.zeros((7, 7), np.float32), 0, 10)
    with pytest.raises(ValueError):
        heatmap_to_png(np.zeros((7, 7), np.float32), 10, 100_000)


def test_a_flat_map_normalises_to_zeros() -> None:
    assert normalise_map(np.full((5, 5), 3.0)).max() == 0.0


def test_cam_to_heatmap_removes_the_letterbox_and_keeps_the_aspect() -> None:
    gray = np.zeros((400, 200), np.uint8)
    _, geometry = letterbox_uint8(gray, InputSpec(size=64))
    cam = np.zeros((8, 8), np.float32)
    cam[2, 4] = 5.0  # upper half, right of the centre line of the content
    heatmap = cam_to_heatmap(cam, geometry)
    assert heatmap.shape == (64, 32)
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0)
    x, y = peak(heatmap)
    assert 0.5 < x < 0.9 and 0.2 < y < 0.4


def test_pointing_game_hits_and_misses() -> None:
    heatmap = _blob(100, 100, 0.3, 0.7)
    assert pointing_hit(heatmap, [(0.7, 0.3, 0.1, 0.1)])
    assert not pointing_hit(heatmap, [(0.2, 0.8, 0.1, 0.1)])
    assert pointing_hit(heatmap, [(0.2, 0.8, 0.1, 0.1), (0.68, 0.31, 0.05, 0.05)])
    assert pointing_hit(heatmap, [(0.78, 0.3, 0.1, 0.1)], tolerance=0.05)


def test_overlay_blends_over_the_radiograph() -> None:
    gray = np.full((50, 40), 100, np.uint8)
    blended = overlay(gray, normalise_map(_blob(50, 40, 0.5, 0.5)), opacity=0.6)
    assert blended.shape == (50, 40, 3)
    assert tuple(blended[0, 0]) == (100, 100, 100)
    assert tuple(blended[25, 20]) != (100, 100, 100)


def test_the_stored_heatmap_is_its_levels_and_becomes_the_overlay_when_viewed() -> None:
    heatmap = np.zeros((224, 160), np.float32)
    heatmap[40:60, 100:120] = 1.0
    stored = heatmap_to_stored_png(heatmap)
    levels = np.asarray(Image.open(io.BytesIO(stored)))
    assert levels.shape == (224, 160) and levels.dtype == np.uint8
    assert levels[50, 110] == 255 and levels[0, 0] == 0
    rgba = np.asarray(Image.open(io.BytesIO(stored_to_overlay_png(stored, 700, 980))))
    assert rgba.shape == (512, 366, 4)  # scaled to the radiograph's aspect, at most 512 px
    assert rgba[0, 0, 3] == 0 and rgba[int(50 * 512 / 224), int(110 * 366 / 160), 3] == 255
    # the same overlay as colouring the map directly
    assert stored_to_overlay_png(stored, 700, 980) == heatmap_to_png(levels / 255.0, 366, 512)


def test_an_overlay_stored_whole_passes_through_and_garbage_is_refused() -> None:
    whole = heatmap_to_png(np.ones((8, 8), np.float32), 64, 48)
    assert stored_to_overlay_png(whole, 640, 480) == whole
    with pytest.raises(ValueError, match="not a readable PNG"):
        stored_to_overlay_png(b"not a png", 640, 480)
    with pytest.raises(ValueError):
        heatmap_to_stored_png(np.zeros((0, 3), np.float32))


def test_overlay_size_keeps_the_aspect_and_never_enlarges() -> None:
    assert overlay_size(2048, 1024) == (512, 256)
    assert overlay_size(300, 200) == (300, 200)
    assert overlay_size(1, 5000) == (1, 512)
