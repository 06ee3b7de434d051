"""The v2 model's geometry and metrics: box <-> cell mapping through the letterbox, FROC, pointing game,
operating points, cluster-weighted calibration, and who teaches which head."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.bands import band_of, cluster_weights, sensitive_threshold, specific_threshold
from classifier.cells import (
    BOXED_NEGATIVE_WEIGHT,
    CELL_STRIDE,
    CENTRE_SHARE,
    Box,
    BoxRule,
    box_hits,
    box_mask,
    cell_coverage,
    cell_peak,
    cells_to_boxes,
    fraction_boxes_to_pixels,
    pointing_hits,
)
from classifier.data import ImageSet, Record
from classifier.detector import (
    CELLS_BOXED,
    CELLS_NONE,
    CELLS_NORMAL,
    DetectorData,
    DetectorFit,
    detector_data,
)
from classifier.localisation import box_counts, choose_box_rule, sensitivity_at
from classifier.metrics import expected_calibration_error, fit_platt
from classifier.preprocessing import InputSpec, letterbox_uint8

SPEC = InputSpec(size=320)
# The few-step fits below run their training step eagerly but for the determinism test's (see conftest).
pytestmark = pytest.mark.usefixtures("eager_training")


def _geometry(height: int, width: int):
    return letterbox_uint8(np.zeros((height, width), np.uint8), SPEC)[1]


@pytest.mark.parametrize(("height", "width"), [(500, 300), (300, 500), (1000, 1000), (224, 224)])
def test_a_bright_square_maps_back_to_its_own_box(height: int, width: int) -> None:
    # A square on the radiograph, as a fracture box (fractions); its cells, as a perfect cell head would
    # score them (the share of each cell inside the box), turned back into a box in original pixels.
    cx, cy, side = 0.6, 0.35, 0.2
    geometry = _geometry(height, width)
    truth = fraction_boxes_to_pixels([(cx, cy, side, side)], width, height)[0]
    coverage = cell_coverage(box_mask(geometry, [(cx, cy, side, side)]))
    (box,) = cells_to_boxes(coverage, geometry, threshold=0.5)
    cell_in_original = CELL_STRIDE * max(height, width) / SPEC.size
    for got, want in zip((box.x0, box.y0, box.x1, box.y1), truth, strict=True):
        assert abs(got - want) <= cell_in_original  # within one cell, never half a cell shifted each way
    centre = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    want_centre = ((truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2)
    assert abs(centre[0] - want_centre[0]) <= cell_in_original / 2
    assert abs(centre[1] - want_centre[1]) <= cell_in_original / 2
    peak = cell_peak(coverage, geometry)
    assert truth[0] <= peak[0] <= truth[2] and truth[1] <= peak[1] <= truth[3]


def test_box_masks_follow_the_letterbox() -> None:
    geometry = _geometry(160, 320)  # content 320 x 160, centred: rows 80..240
    mask = box_mask(geometry, [(0.5, 0.5, 0.5, 0.5)])
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1) == (120, 200)
    assert (cols.min(), cols.max() + 1) == (80, 240)
    coverage = cell_coverage(mask)
    assert coverage.shape == (20, 20)
    assert coverage[8, 6] == 1.0 and coverage[7, 5] == pytest.approx(0.5 * 1.0)  # rows 112-128 half in


def test_cells_on_the_padding_make_no_box() -> None:
    geometry = _geometry(160, 320)
    cells = np.zeros((20, 20), np.float32)
    cells[0:3, :] = 0.9  # the top padding only (rows 0..48 of 80)
    assert cells_to_boxes(cells, geometry, threshold=0.5) == []


def test_separate_regions_make_separate_boxes_best_first() -> None:
    geometry = _geometry(320, 320)
    cells = np.zeros((20, 20), np.float32)
    cells[2:4, 2:4] = 0.6
    cells[10, 15] = 0.95
    boxes = cells_to_boxes(cells, geometry, threshold=0.5)
    assert [round(b.score, 2) for b in boxes] == [0.95, 0.6]
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1) == (240, 160, 256, 176)
    assert (boxes[1].x0, boxes[1].y0, boxes[1].x1, boxes[1].y1) == (32, 32, 64, 64)
    assert cells_to_boxes(cells, geometry, threshold=0.99) == []
    assert len(cells_to_boxes(cells, geometry, threshold=0.99, always_top=True)) == 1


def _saturated_plateau(plateau: float = 5.0, peak: float = 9.0, second: float | None = 7.0) -> np.ndarray:
    # What the cell head does over a fracture: a wide plateau of cells at 0.99+ (logit 5) with the fracture
    # itself higher (logit 9, cell (5, 5)) and, by default, a second, weaker peak at its far end (logit 7).
    logits = np.full((20, 20), -8.0, np.float32)
    logits[3:12, 3:14] = plateau
    logits[5, 5] = peak
    if second is not None:
        logits[10, 12] = second
    return (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def test_one_box_per_peak_splits_a_saturated_plateau_into_tight_boxes() -> None:
    geometry = _geometry(320, 320)  # no padding: model pixels are original pixels
    cells = _saturated_plateau()
    # One box per region: the whole plateau, 176 x 144 px, whose centre (136, 120) misses the fracture cell.
    (region,) = cells_to_boxes(cells, geometry, threshold=0.9)
    assert (region.x0, region.y0, region.x1, region.y1) == (48, 48, 224, 192)
    # One box per peak, within 1 logit of it, best first: the fracture's own cell, then the second peak's
    # cell. The plateau (4 logits under either peak) would be a box around both of theirs: boxes never
    # nest, so it makes none.
    boxes = cells_to_boxes(cells, geometry, threshold=0.9, peak_drop=1.0)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes] == [(80, 80, 96, 96), (192, 160, 208, 176)]
    assert boxes[0].score == pytest.approx(1 / (1 + np.exp(-9.0)))
    assert boxes[0].score > boxes[1].score
    # A drop deeper than the plateau's gap takes the plateau into the best peak's box, and the second peak,
    # inside it, makes no box of its own.
    (wide,) = cells_to_boxes(cells, geometry, threshold=0.9, peak_drop=5.0)
    assert (wide.x0, wide.y0, wide.x1, wide.y1) == (48, 48, 224, 192)
    assert cells_to_boxes(cells, geometry, threshold=0.9, peak_drop=1.0, max_boxes=1) == boxes[:1]


def test_the_box_rule_reads_its_card_and_defaults_to_regions() -> None:
    assert BoxRule.from_card({}) == BoxRule(threshold=0.5, peak_drop=None, max_boxes=5)
    rule = BoxRule.from_card({"boxes": {"threshold": 0.75, "peak_drop": 1, "max_boxes": 3}})
    assert rule == BoxRule(threshold=0.75, peak_drop=1.0, max_boxes=3)
    geometry = _geometry(320, 320)
    assert rule.boxes(_saturated_plateau(), geometry) == cells_to_boxes(
        _saturated_plateau(), geometry, threshold=0.75, peak_drop=1.0, max_boxes=3
    )
    assert "one box per local peak" in rule.describe() and "8-connected" in BoxRule(0.5).describe()


class _ValCells:
    """What choose_box_rule reads of a scored val set: records, their cells and letterbox geometries."""

    def __init__(self, cells: list[np.ndarray], boxes: list[list[tuple[float, float, float, float]]]) -> None:
        self.cells = np.array(cells, np.float32)
        self.records = [
            Record(Path(f"{i}.png"), "fracatlas", "val", int(bool(b)), f"c{i}", boxes=tuple(b))
            for i, b in enumerate(boxes)
        ]
        self.sources = np.array([r.source for r in self.records])
        geometry = _geometry(320, 320)
        self.data = type("Data", (), {"geometries": [geometry] * len(cells)})()

    def where(self, source: str) -> np.ndarray:
        return np.flatnonzero(self.sources == source)


def test_the_box_rule_is_chosen_on_val_for_the_most_fractures_at_half_a_false_box_per_image() -> None:
    # Two fractured radiographs whose fracture is the peak cell (5, 5) of a plateau saturated beyond the
    # highest threshold swept (logit 7: 0.9991), and two normal ones with nothing lit. One box per region is
    # the whole plateau at every threshold and misses both fractures (its centre falls off the one-cell
    # fracture box, IoU under 0.1); one box per peak finds both, and no false box.
    fracture = [((5 + 0.5) * 16 / 320, (5 + 0.5) * 16 / 320, 16 / 320, 16 / 320)]
    plateau = _saturated_plateau(plateau=7.0, peak=10.0, second=None)
    normal = np.full((20, 20), 1e-4, np.float32)
    val = _ValCells([plateau, plateau, normal, normal], [fracture, fracture, [], []])
    rule, choice = choose_box_rule(val, ["fracatlas"])  # type: ignore[arg-type]
    assert rule.peak_drop is not None and rule.peak_drop <= 3.0
    assert choice["val_sensitivity_at_target"] == 1.0
    regions = sensitivity_at(choice["curves"]["regions"]["fracatlas"], 0.5)
    assert regions["sensitivity"] == 0.0


def test_a_box_hits_a_fracture_by_overlap_or_by_its_centre() -> None:
    truth = (100.0, 100.0, 140.0, 120.0)
    assert box_hits(Box(95, 95, 145, 125, 0.9), truth)  # IoU 0.55
    assert box_hits(Box(0, 0, 240, 220, 0.9), truth)  # huge box, centre (120, 110) inside
    assert not box_hits(Box(200, 200, 240, 240, 0.9), truth)


def test_pointing_game_on_a_hand_made_example() -> None:
    truths = [
        [(10.0, 10.0, 20.0, 20.0)],
        [(0.0, 0.0, 5.0, 5.0), (50.0, 50.0, 60.0, 60.0)],
        [(0.0, 0.0, 1.0, 1.0)],
    ]
    peaks = [(15.0, 15.0), (55.0, 59.0), (2.0, 2.0)]
    np.testing.assert_array_equal(pointing_hits(peaks, truths), [True, True, False])


def test_froc_counts_on_a_hand_made_example() -> None:
    # Image 1: two fractures, one found, one false box. Image 2 (normal): one false box. Image 3: found.
    truths = [[(0.0, 0.0, 10.0, 10.0), (50.0, 50.0, 60.0, 60.0)], [], [(20.0, 20.0, 30.0, 30.0)]]
    predicted = [
        [Box(1, 1, 9, 9, 0.9), Box(80, 80, 90, 90, 0.8)],
        [Box(5, 5, 9, 9, 0.7)],
        [Box(21, 21, 29, 29, 0.6)],
    ]
    assert box_counts(predicted, truths) == (2, 3, 2)  # found, fractures, false positives
    curve = [
        {"threshold": 0.3, "sensitivity": 0.9, "fp_per_image": 1.2},
        {"threshold": 0.5, "sensitivity": 0.8, "fp_per_image": 0.5},
        {"threshold": 0.7, "sensitivity": 0.6, "fp_per_image": 0.1},
    ]
    assert sensitivity_at(curve, 0.5)["threshold"] == 0.5
    assert sensitivity_at(curve, 0.05)["sensitivity"] == 0.0


def test_the_two_operating_points_on_a_hand_made_example() -> None:
    labels = np.array([1] * 20 + [0] * 20)
    probs = np.concatenate([np.linspace(0.3, 0.98, 20), np.linspace(0.0, 0.6, 20)])
    sensitive = sensitive_threshold(labels, probs, 0.95)  # 19 of 20 positives at or above
    assert np.sum(probs[labels == 1] >= sensitive) == 19 and sensitive == pytest.approx(probs[1])
    specific = specific_threshold(labels, probs, 0.95)  # 19 of 20 negatives below
    assert np.sum(probs[labels == 0] < specific) == 19
    np.testing.assert_array_equal(band_of(np.array([0.0, 0.4, 0.99]), 0.3, 0.9), [0, 1, 2])


def test_cluster_weighted_calibration_is_not_moved_by_copies() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    logits = np.where(labels == 1, 1.5, -1.5) + rng.normal(0, 1.5, 400)
    clusters = np.array([f"c{i}" for i in range(400)])
    # One confidently wrong radiograph copied 40 times: unweighted, it drags the slope; weighted, it counts
    # as the one radiograph it is.
    once = fit_platt(np.append(logits, 6.0), np.append(labels, 0))
    copies = 40
    logits_c = np.concatenate([logits, np.full(copies, 6.0)])
    labels_c = np.concatenate([labels, np.zeros(copies, int)])
    clusters_c = np.concatenate([clusters, np.array(["copied"] * copies)])
    weighted = fit_platt(logits_c, labels_c, cluster_weights(clusters_c))
    unweighted = fit_platt(logits_c, labels_c)
    assert weighted["a"] == pytest.approx(once["a"], abs=1e-3)
    assert weighted["b"] == pytest.approx(once["b"], abs=1e-3)
    assert unweighted["a"] < weighted["a"] - 0.3
    probs = 1 / (1 + np.exp(-(weighted["a"] * logits + weighted["b"])))
    assert expected_calibration_error(labels, probs) < 0.06


def _record(source: str, label: int, boxes: tuple = (), cluster: str = "") -> Record:
    return Record(
        Path(f"/{source}/{cluster}.png"), source, "train", label, cluster or source + str(label), boxes=boxes
    )


def test_the_positives_only_source_teaches_localisation_and_never_the_image_head() -> None:
    records = [
        _record("kaggle", 1, cluster="k1"),
        _record("kaggle", 0, cluster="k0"),
        _record("fracatlas", 1, ((0.5, 0.5, 0.2, 0.2),), "f1"),
        _record("fracatlas", 0, cluster="f0"),
        _record("boxes", 1, ((0.3, 0.3, 0.1, 0.1),), "b1"),
    ]
    images = np.zeros((len(records), 320, 320), np.uint8)
    geometries = [_geometry(320, 320)] * len(records)
    data = detector_data(ImageSet(records, images, geometries, SPEC), image_sources=["fracatlas", "kaggle"])
    np.testing.assert_array_equal(
        data.cell_modes, [CELLS_NONE, CELLS_NORMAL, CELLS_BOXED, CELLS_NORMAL, CELLS_BOXED]
    )
    assert data.image_weights[4] == 0.0 and np.all(data.image_weights[:4] > 0)
    assert data.masks[2].sum() > 0 and data.masks[4].sum() > 0 and data.masks[0].sum() == 0


def _distinct_images(n: int, size: int = 64) -> tuple[ImageSet, list[Record]]:
    """n images, each a bright square at its own place (so each row of a batch can be told apart)."""
    records = [_record("kaggle", i % 2, cluster=f"k{i}") for i in range(n)]
    images = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        images[i, 4 * i : 4 * i + 8, 8:40] = 200
    spec = InputSpec(size=size)
    geometries = [letterbox_uint8(np.zeros((size, size), np.uint8), spec)[1] for _ in range(n)]
    return ImageSet(records, images, geometries, spec), records


def test_paired_batches_hold_each_image_twice_in_two_different_views() -> None:
    from classifier.detector import detector_dataset
    from classifier.pipeline import AugmentSpec

    data, _ = _distinct_images(8)
    train = detector_data(data, image_sources=["kaggle"])
    augment = AugmentSpec(hflip=True, rotation=30.0, zoom=0.2, shift=0.1)
    x, y, w, _, _ = next(iter(detector_dataset(train, batch_size=8, augment=augment, seed=0, paired=True)))
    x, y, w = np.asarray(x), np.asarray(y), np.asarray(w)
    assert x.shape == (8, 64, 64, 1)
    # Rows 2i and 2i+1 are one image: same label and weight, four distinct images per batch...
    np.testing.assert_array_equal(y[0::2], y[1::2])
    np.testing.assert_array_equal(w[0::2], w[1::2])
    # ...each copy augmented on its own (same brightness mass, different placement).
    assert all(not np.allclose(x[2 * i], x[2 * i + 1]) for i in range(4))
    plain = next(iter(detector_dataset(train, batch_size=8, augment=augment, seed=0)))
    assert len(set(np.asarray(plain[1]).tolist())) == 2 and np.asarray(plain[0]).shape == (8, 64, 64, 1)
    with pytest.raises(ValueError, match="even batch size"):
        detector_dataset(train, batch_size=7, augment=augment, seed=0, paired=True)


@pytest.mark.parametrize(("stride", "negative_weight"), [(16, 0.3), (8, 0.3), (16, 1.0)])
def test_cell_targets_come_from_the_box_at_the_heads_stride(stride: int, negative_weight: float) -> None:
    from classifier.detector import detector_dataset
    from classifier.recipe import AUGMENT_PRESETS

    spec = InputSpec(size=64)
    # One fractured image whose box covers model pixels [16, 32) x [16, 32): one 16-pixel cell, four 8-pixel ones.
    record = _record("fracatlas", 1, ((24 / 64, 24 / 64, 16 / 64, 16 / 64),), "f1")
    geometry = letterbox_uint8(np.zeros((64, 64), np.uint8), spec)[1]
    data = ImageSet([record], np.zeros((1, 64, 64), np.uint8), [geometry], spec)
    train = detector_data(data, image_sources=["fracatlas"])
    batches = detector_dataset(
        train,
        batch_size=1,
        augment=AUGMENT_PRESETS["none"],
        seed=0,
        cell_stride=stride,
        boxed_negative_weight=negative_weight,
    )
    _, _, _, target, weight = (np.asarray(t)[0] for t in next(iter(batches)))
    n = 64 // stride
    inside = np.zeros((n, n), bool)
    inside[16 // stride : 32 // stride, 16 // stride : 32 // stride] = True
    assert target.shape == (n, n) and weight.shape == (n, n)
    np.testing.assert_array_equal(target, inside.astype(np.float32))
    # The rest of a boxed radiograph is negative, at the recipe's weight (the sign carries the class).
    np.testing.assert_allclose(weight, np.where(inside, 1.0, -negative_weight))


def test_centre_targets_make_the_boxes_middle_positive_and_ignore_the_rest_of_it() -> None:
    from classifier.detector import detector_dataset
    from classifier.recipe import AUGMENT_PRESETS

    spec = InputSpec(size=128)
    # A box over model pixels [16, 64) x [16, 64): nine 16-pixel cells, its central third [32, 48) the middle one.
    record = _record("fracatlas", 1, ((40 / 128, 40 / 128, 48 / 128, 48 / 128),), "f1")
    geometry = letterbox_uint8(np.zeros((128, 128), np.uint8), spec)[1]
    data = ImageSet([record], np.zeros((1, 128, 128), np.uint8), [geometry], spec)
    train = detector_data(data, image_sources=["fracatlas"], cell_target="centre")
    assert train.masks.shape == (1, 128, 128, 2)
    batches = detector_dataset(train, batch_size=1, augment=AUGMENT_PRESETS["none"], seed=0)
    _, _, _, target, weight = (np.asarray(t)[0] for t in next(iter(batches)))
    box, middle = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    box[1:4, 1:4] = True
    middle[2, 2] = True
    np.testing.assert_array_equal(target, middle.astype(np.float32))
    # The box's other eight cells are neither fracture nor background; outside it, negative as usual.
    np.testing.assert_allclose(weight, np.where(middle, 1.0, np.where(box, 0.0, -BOXED_NEGATIVE_WEIGHT)))


def test_a_small_boxs_centre_is_at_least_a_pixel() -> None:
    spec = InputSpec(size=64)
    geometry = letterbox_uint8(np.zeros((64, 64), np.uint8), spec)[1]
    core = box_mask(geometry, [(20 / 64, 20 / 64, 1 / 64, 1 / 64)], share=CENTRE_SHARE)
    assert core.sum() >= 1 and core[19:21, 19:21].any()


def test_view_consistency_is_the_mean_squared_difference_within_each_pair() -> None:
    from classifier.detector import view_consistency

    logits = np.array([1.0, 3.0, -2.0, -2.0, 0.5, -0.5], np.float32)  # pairs differ by 2, 0, 1
    assert float(view_consistency(logits)) == pytest.approx((4 + 0 + 1) / 3)


def test_highest_cell_is_each_images_own_maximum() -> None:
    from classifier.train_detector import highest_cell

    cells = np.full((3, 4, 4), -5.0, np.float32)
    cells[0, 3, 1] = 2.5
    cells[1, 0, 0] = -1.0
    cells[2] = -7.0
    assert highest_cell(cells).tolist() == [2.5, -1.0, -7.0]
    assert highest_cell(np.zeros((0, 4, 4), np.float32)).shape == (0,)


def _augmented_stream(train: DetectorData, seed: int, batches: int) -> list[np.ndarray]:
    from classifier.detector import detector_dataset
    from classifier.pipeline import AugmentSpec

    augment = AugmentSpec(hflip=True, rotation=30.0, zoom=0.2, shift=0.1, brightness=0.1, contrast=0.1)
    iterator = iter(detector_dataset(train, batch_size=4, augment=augment, seed=seed))
    return [np.asarray(next(iterator)[0]) for _ in range(batches)]


def test_one_seed_draws_the_same_augmented_batches_however_the_parallel_calls_interleave() -> None:
    # Stateful random ops in the parallel map gave about one batch in five another batch's draws.
    data, _ = _distinct_images(8)
    train = detector_data(data, image_sources=["kaggle"])
    first, second = _augmented_stream(train, 0, 60), _augmented_stream(train, 0, 60)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other_seed = _augmented_stream(train, 1, 60)
    assert not any(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))
    # Each batch draws its own views: the same images come back differently augmented.
    assert len({a.tobytes() for a in first}) == len(first)


def _small_fit(train: DetectorData, **options: Any) -> DetectorFit:
    """A few steps of fit_detector at 64 px from random weights, seed 0 (options override)."""
    from classifier.detector import fit_detector
    from classifier.pipeline import AugmentSpec

    settings: dict[str, Any] = {
        "size": 64,
        "epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "warmup": 0.1,
        "augment": AugmentSpec(hflip=True, rotation=45.0, zoom=0.2, shift=0.1, brightness=0.1),
        "cell_loss_weight": 1.0,
        "backbone_weights": None,
        "seed": 0,
    }
    return fit_detector(train, **(settings | options))


def test_a_fit_records_its_losses_and_one_seed_fits_the_same_weights_twice(
    graph_functions: Callable[[], AbstractContextManager[None]],
) -> None:
    import keras

    from classifier.detector import detector_core

    data, _ = _distinct_images(8)
    train = detector_data(data, image_sources=["kaggle"])

    def fit() -> tuple[dict[str, float], list[np.ndarray]]:
        with graph_functions():  # the determinism real training relies on: its step is a graph
            fitted = _small_fit(train, consistency_weight=0.1, max_steps=4)
        (row,) = fitted.history
        return row, [np.asarray(w) for w in fitted.core.get_weights()]

    row, first = fit()
    assert np.isfinite(row["consistency"]) and row["consistency"] >= 0 and np.isfinite(row["image_loss"])
    assert all(np.array_equal(a, b) for a, b in zip(first, fit()[1], strict=True))
    # ...and not because nothing was learnt: the fit moved the seed's initial weights.
    keras.utils.set_random_seed(0)
    initial = [np.asarray(w) for w in detector_core(64, backbone_weights=None).get_weights()]
    assert not all(np.array_equal(a, b) for a, b in zip(first, initial, strict=True))


def test_a_fit_with_ema_evaluates_and_keeps_the_moving_average_and_trains_on_from_the_raw_weights() -> None:
    data, _ = _distinct_images(8)
    train = detector_data(data, image_sources=["kaggle"])
    momentum = 0.5

    def fit(ema_momentum: float) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
        seen: list[list[np.ndarray]] = []  # what each epoch's end evaluates and saves
        fitted = _small_fit(
            train,
            epochs=3,
            ema_momentum=ema_momentum,
            max_steps=1,  # one step an epoch: each epoch's end sees one more step of the average
            on_epoch=lambda _epoch, core, _row: seen.append([v.numpy() for v in core.trainable_variables]),
        )
        return seen, [v.numpy() for v in fitted.core.trainable_variables]

    raw, _ = fit(0.0)  # the raw weights after steps 1, 2, 3 (the same seed repeats them bit for bit)
    averaged, kept = fit(momentum)
    # Step 1 starts the average at the weights; each later step moves it by (1 - momentum) towards them.
    # Step 3's raw weights are the plain fit's only if training went on from step 2's raw weights, not
    # from the average evaluated at the end of epoch 2.
    expected = raw[0]
    for epoch in range(3):
        if epoch:
            expected = [momentum * e + (1 - momentum) * w for e, w in zip(expected, raw[epoch], strict=True)]
        assert all(np.allclose(a, e, atol=1e-6) for a, e in zip(averaged[epoch], expected, strict=True))
    assert not all(np.allclose(a, w, atol=1e-6) for a, w in zip(averaged[2], raw[2], strict=True))
    # The fit keeps the last epoch's average (no evaluate_epoch: no epoch is chosen).
    assert all(np.array_equal(k, a) for k, a in zip(kept, averaged[2], strict=True))


def test_a_fit_runs_the_steps_per_epoch_it_is_given_however_few_images_it_has() -> None:
    data, _ = _distinct_images(4)
    train = detector_data(data, image_sources=["kaggle"])  # one batch of 4: one step an epoch by default

    one, three = _small_fit(train), _small_fit(train, steps_per_epoch=3)
    assert (one.steps_per_epoch, three.steps_per_epoch) == (1, 3)
    # ...and trained on: three steps (on a schedule three steps long) leave other weights than one.
    assert not all(
        np.array_equal(a, b) for a, b in zip(one.core.get_weights(), three.core.get_weights(), strict=True)
    )


def test_label_smoothing_pulls_the_image_labels_towards_a_half_and_leaves_the_cells_alone() -> None:
    from classifier.detector import detector_losses

    logits = np.array([2.0, -1.0], np.float32)
    labels, weights = np.array([1.0, 0.0], np.float32), np.ones(2, np.float32)
    cells = np.zeros((2, 2, 2), np.float32)
    targets, cell_weights = np.zeros_like(cells), -np.ones_like(cells)

    def bce(y: np.ndarray) -> float:
        return float(np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))))

    plain, plain_cells = detector_losses(logits, labels, weights, cells, targets, cell_weights)
    smooth, smooth_cells = detector_losses(
        logits, labels, weights, cells, targets, cell_weights, label_smoothing=0.2
    )
    assert float(plain) == pytest.approx(bce(labels), rel=1e-5)
    assert float(smooth) == pytest.approx(bce(np.array([0.9, 0.1])), rel=1e-5)  # 1 -> 0.9, 0 -> 0.1
    assert float(smooth_cells) == float(plain_cells)


def test_the_recipes_regularisers_reach_the_detector_it_trains() -> None:
    import keras

    data, _ = _distinct_images(4)
    train = detector_data(data, image_sources=["kaggle"])
    fitted = _small_fit(train, dropout=0.45, drop_connect=0.35, bn_momentum=0.8, max_steps=1)
    dropouts = [
        layer.rate for layer in fitted.core._flatten_layers() if isinstance(layer, keras.layers.Dropout)
    ]
    assert 0.45 in dropouts  # the head's
    momenta = {
        layer.momentum
        for layer in fitted.core._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.8}
    # Stochastic depth grows with depth up to the recipe's rate: past the default 0.2 only if it arrived.
    assert 0.2 < max(_drop_connect_rates(fitted.core)) < 0.35


def _drop_connect_rates(core: Any) -> list[float]:
    """The stochastic-depth rates the backbone's blocks were built with (per-sample noise shape)."""
    import keras

    return [
        float(layer.rate)
        for layer in core._flatten_layers()
        if isinstance(layer, keras.layers.Dropout) and getattr(layer, "noise_shape", None) == (None, 1, 1, 1)
    ]
