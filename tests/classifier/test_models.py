"""classifier.models and classifier.layers: build, the CAM identity, TTA invariance, .keras round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from classifier.models import (  # noqa: E402
    build_core,
    core_of,
    count_params,
    last_block_of_stage,
    lite0_core,
    lite_blocks,
    seed_core,
    serving_model,
    training_model,
)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((3, 64, 64, 1), dtype=np.float32)


def test_the_seed_is_the_notebooks_cnn() -> None:
    core = seed_core(128)
    names = [type(layer).__name__ for layer in core.layers]
    assert names[1:9] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert core.output_shape == (None, 1, 1, 1)


def test_lite0_has_the_reference_size_and_a_cam_head() -> None:
    core = lite0_core(224)
    assert core.output_shape == (None, 7, 7, 1)
    # 3.37 M backbone parameters (grey stem) + 1281 for the head; the ImageNet classifier is dropped.
    assert 3_350_000 < count_params(core) < 3_450_000


def test_lite1_deepens_the_inner_stages_only() -> None:
    # The reference builder: ceil(1.1 r) repeats, the first and last stages fixed, Lite0's widths.
    assert [b.repeats for b in lite_blocks("lite0")] == [1, 2, 2, 3, 3, 4, 1]
    assert [b.repeats for b in lite_blocks("lite1")] == [1, 3, 3, 4, 4, 5, 1]
    assert [b.filters_out for b in lite_blocks("lite1")] == [b.filters_out for b in lite_blocks("lite0")]
    assert (last_block_of_stage("lite0", 4), last_block_of_stage("lite1", 4)) == (10, 14)
    with pytest.raises(ValueError, match="lite7"):
        lite_blocks("lite7")


@pytest.mark.parametrize(("backbone", "frozen", "fine"), [("lite0", 3, 10), ("lite1", 4, 14)])
def test_the_detector_freezes_the_stride_4_stages_and_reads_the_last_stride_16_block(
    backbone: str, frozen: int, fine: int
) -> None:
    from classifier.detector import detector_core

    core = detector_core(64, backbone=backbone)
    assert [tuple(o.shape) for o in core.outputs] == [(None, 2, 2, 1), (None, 4, 4, 1), (None, 1280)]
    features = core.get_layer(f"{backbone}_features")
    fine_output = features.outputs[0]
    assert fine_output is features.get_layer(f"block{fine}_add").output
    assert tuple(fine_output.shape) == (None, 4, 4, 112)
    frozen_blocks = {
        int(layer.name[5:].split("_")[0])
        for layer in features.layers
        if layer.name.startswith("block") and layer.weights and not layer.trainable
    }
    assert frozen_blocks == set(range(frozen))
    assert features.get_layer(f"block{frozen}_dwconv").trainable


@pytest.mark.parametrize(("backbone", "finer"), [("lite0", 4), ("lite1", 6)])
def test_a_cell_stride_of_8_adds_the_last_stride_8_block_and_doubles_the_cell_grid(
    backbone: str, finer: int
) -> None:
    from classifier.detector import detector_core

    core = detector_core(64, backbone=backbone, cell_stride=8)
    assert [tuple(o.shape) for o in core.outputs] == [(None, 2, 2, 1), (None, 8, 8, 1), (None, 1280)]
    features = core.get_layer(f"{backbone}_features")
    finer_output = features.outputs[1]
    assert finer_output is features.get_layer(f"block{finer}_add").output
    assert tuple(finer_output.shape) == (None, 8, 8, 40)
    # The stride-8 block itself trains: only the stride-2/4 stages are frozen, at either cell stride.
    assert features.get_layer(f"block{finer}_dwconv").trainable
    with pytest.raises(ValueError, match="cell stride"):
        detector_core(64, backbone=backbone, cell_stride=4)


def test_the_serving_logit_is_the_mean_of_its_cam(batch: np.ndarray) -> None:
    core = build_core("tiny", 64)
    out = serving_model(core, tta="none").predict_on_batch(batch)
    np.testing.assert_allclose(out["logit"][:, 0], out["cam"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    train_logit = training_model(core).predict_on_batch(batch)
    np.testing.assert_allclose(train_logit, out["logit"], rtol=1e-5, atol=1e-6)


def test_log_sum_exp_pooling_is_a_smooth_maximum_of_the_cam(batch: np.ndarray) -> None:
    core = build_core("tiny", 64)
    out = serving_model(core, tta="none", pooling="lse").predict_on_batch(batch)
    cam = out["cam"].reshape(len(batch), -1).astype(np.float64)
    expected = np.log(np.mean(np.exp(cam), axis=1))
    np.testing.assert_allclose(out["logit"][:, 0], expected, rtol=1e-4, atol=1e-5)
    # Between the mean and the maximum of the map, as a smooth maximum must be.
    assert np.all(out["logit"][:, 0] >= cam.mean(axis=1) - 1e-5)
    assert np.all(out["logit"][:, 0] <= cam.max(axis=1) + 1e-5)
    train_logit = training_model(core, pooling="lse").predict_on_batch(batch)
    np.testing.assert_allclose(train_logit, out["logit"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tta", ["flip", "dihedral"])
def test_tta_makes_the_answer_invariant_to_its_views(batch: np.ndarray, tta: str) -> None:
    model = serving_model(build_core("tiny", 64), tta=tta)
    base = model.predict_on_batch(batch)
    flipped = model.predict_on_batch(batch[:, :, ::-1].copy())
    np.testing.assert_allclose(flipped["logit"], base["logit"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flipped["cam"], base["cam"][:, :, ::-1], rtol=1e-4, atol=1e-5)
    if tta == "dihedral":
        rotated = model.predict_on_batch(np.rot90(batch, 1, axes=(1, 2)).copy())
        np.testing.assert_allclose(rotated["logit"], base["logit"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            rotated["cam"], np.rot90(base["cam"], 1, axes=(1, 2)), rtol=1e-4, atol=1e-5
        )


def test_tta_averages_the_views_of_the_plain_model(batch: np.ndarray) -> None:
    core = build_core("tiny", 64)
    plain = serving_model(core, tta="none")
    flip = serving_model(core, tta="flip")
    expected = (
        plain.predict_on_batch(batch)["logit"] + plain.predict_on_batch(batch[:, :, ::-1].copy())["logit"]
    ) / 2
    np.testing.assert_allclose(flip.predict_on_batch(batch)["logit"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "size", "tta", "pooling"),
    [("lite0", 64, "flip", "lse"), ("seed", 32, "dihedral", "mean"), ("tiny", 32, "none", "mean")],
)
def test_a_serving_model_round_trips_through_a_keras_file(
    arch: str, size: int, tta: str, pooling: str, tmp_path: Path
) -> None:
    import classifier.layers  # noqa: F401

    model = serving_model(build_core(arch, size), tta=tta, pooling=pooling)
    x = np.random.default_rng(1).random((2, size, size, 1), dtype=np.float32)
    before = model.predict_on_batch(x)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False, safe_mode=True)
    after = loaded.predict_on_batch(x)
    for key in ("logit", "cam"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)
    assert core_of(loaded).name == core_of(model).name


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rot4_tta_gives_a_turned_radiograph_the_same_answer_and_turned_maps(
    batch: np.ndarray, turns: int
) -> None:
    from classifier.detector import detector_serving_model
    from classifier.testing import tiny_detector_core

    model = detector_serving_model(tiny_detector_core(64), tta="rot4")
    base = model.predict_on_batch(batch)
    turned = model.predict_on_batch(np.rot90(batch, turns, axes=(1, 2)).copy())
    np.testing.assert_allclose(turned["logit"], base["logit"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(turned["embedding"], base["embedding"], rtol=1e-4, atol=1e-5)
    for name in ("cam", "cells"):
        np.testing.assert_allclose(
            turned[name], np.rot90(base[name], turns, axes=(1, 2)), rtol=1e-4, atol=1e-5
        )
    # Without rot4 the tiny model's answer does change with a turn: the test above can fail.
    plain = detector_serving_model(tiny_detector_core(64), tta="none")
    assert not np.allclose(
        plain.predict_on_batch(np.rot90(batch, turns, axes=(1, 2)).copy())["cells"],
        np.rot90(plain.predict_on_batch(batch)["cells"], turns, axes=(1, 2)),
        atol=1e-4,
    )
