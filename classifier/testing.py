"""Small, real model artifacts for other packages' tests and benchmarks.

``write_tiny_artifact`` builds a random few-thousand-parameter model with the same serving interface as
the shipped one (``{"logit", "cam", "cells", "embedding"}`` outputs, a card with both operating points, a
box threshold, out-of-distribution and drift references), so the app's tests exercise the real Predictor
code path in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
from classifier.preprocessing import InputSpec

TINY_SIZE = 64
TINY_EMBEDDING = 16


def tiny_detector_core(size: int = TINY_SIZE, *, seed: int = 0) -> Any:
    """A few-thousand-parameter model with the detector's outputs: [cam (S/32), cells (S/16), embedding]."""
    import keras
    from keras import layers

    init = keras.initializers.GlorotUniform(seed=seed)
    image = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", kernel_initializer=init)(image)
    fine = layers.Conv2D(
        TINY_EMBEDDING, 3, strides=4, padding="same", activation="relu", kernel_initializer=init
    )(x)
    coarse = layers.Conv2D(
        TINY_EMBEDDING, 3, strides=2, padding="same", activation="relu", kernel_initializer=init
    )(fine)
    cam = layers.Conv2D(1, 1, kernel_initializer=init, name="cam")(coarse)
    cells = layers.Conv2D(1, 1, kernel_initializer=init, name="cells")(fine)
    embedding = layers.GlobalAveragePooling2D(name="embedding")(coarse)
    return keras.Model(image, [cam, cells, embedding], name="tiny_det")


def write_tiny_artifact(dest_dir: Path, *, version: str = "tiny-test") -> Path:
    """Write ``model.keras`` + ``card.json`` of a tiny random detector model to ``dest_dir``; return it."""
    import keras

    from classifier.detector import detector_serving_model

    keras.utils.set_random_seed(0)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    detector_serving_model(tiny_detector_core(), tta="none").save(dest_dir / MODEL_FILE)
    card = new_card(
        version=version,
        architecture={"name": "tiny_det", "tta": "none", "trained": False, "cell_stride": 16},
        input_spec=InputSpec(size=TINY_SIZE),
        calibration={"method": "identity"},
        threshold=0.4,
        operating_points={"sensitive": 0.4, "specific": 0.6, "fitted_on": "nothing: random weights"},
        boxes={"threshold": 0.5, "max_boxes": 5},
        ood={
            "method": "mahalanobis_diag",
            "centroid": [0.0] * TINY_EMBEDDING,
            "scale": [1.0] * TINY_EMBEDDING,
            "threshold": 1e6,
            "in_distribution_flag_rate": 0.0,
            "fitted_on": "nothing: random weights",
        },
        intended_use={"modalities": ["DX", "CR", "DR"], "body_regions": None, "min_age_years": None},
        notes="Random weights, for tests and benchmarks only: its predictions mean nothing.",
    )
    write_card(card, dest_dir / CARD_FILE)
    return dest_dir


def write_untrained_artifact(
    dest_dir: Path,
    *,
    size: int = 320,
    tta: str = "flip",
    version: str = "untrained-lite0det",
    backbone: str = "lite0",
    cell_stride: int = 16,
) -> Path:
    """A full-size detector (Lite0 or Lite1 + both heads) with random weights, as costly as a trained one."""
    import keras

    from classifier.detector import detector_core, detector_serving_model

    keras.utils.set_random_seed(0)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    core = detector_core(size, backbone=backbone, cell_stride=cell_stride)
    detector_serving_model(core, tta=tta).save(dest_dir / MODEL_FILE)
    card = new_card(
        version=version,
        architecture={"name": "lite0det", "tta": tta, "trained": False, "cell_stride": cell_stride},
        input_spec=InputSpec(size=size),
        calibration={"method": "identity"},
        threshold=0.4,
        operating_points={"sensitive": 0.4, "specific": 0.6, "fitted_on": "nothing: random weights"},
        boxes={"threshold": 0.5, "max_boxes": 5},
        notes="Random weights, for benchmarks only: its predictions mean nothing.",
    )
    write_card(card, dest_dir / CARD_FILE)
    return dest_dir
