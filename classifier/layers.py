"""Custom Keras layers of the serving graph: test-time augmentation inside the model.

Keras 3 only (``keras.ops``), registered for serialisation, so a saved ``.keras`` file loads and runs on
the TensorFlow, JAX and PyTorch backends once this module is imported (the Predictor imports it).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PACKAGE = "fracture_review"

# Each view is a sequence of elementary moves applied left to right to an (N, H, W, C) tensor:
# "h" flips rows (vertical flip), "w" flips columns (horizontal flip), "t" swaps rows and columns.
# The inverse of a view applies the same moves right to left (each move is its own inverse).
TTA_VIEWS: dict[str, tuple[tuple[str, ...], ...]] = {
    "none": ((),),
    "flip": ((), ("w",)),
    # The four right-angle turns: a radiograph and its copy turned by 90 degrees get the same four views,
    # so the same answer (0, 90 clockwise, 180, 90 counter-clockwise).
    "rot4": ((), ("t", "w"), ("h", "w"), ("t", "h")),
    "dihedral": ((), ("w",), ("h",), ("h", "w"), ("t",), ("t", "w"), ("t", "h"), ("t", "h", "w")),
}


def _move(x: Any, move: str) -> Any:
    if move == "h":
        return ops.flip(x, axis=1)
    if move == "w":
        return ops.flip(x, axis=2)
    if move == "t":
        return ops.transpose(x, (0, 2, 1, 3))
    raise ValueError(f"unknown move {move!r}")


def apply_view(x: Any, view: tuple[str, ...], *, inverse: bool = False) -> Any:
    for move in reversed(view) if inverse else view:
        x = _move(x, move)
    return x


class _TTALayer(keras.layers.Layer):
    """A layer configured by one test-time augmentation mode (a key of TTA_VIEWS)."""

    def __init__(self, mode: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in TTA_VIEWS:
            raise ValueError(f"unknown TTA mode {mode!r}; expected one of {sorted(TTA_VIEWS)}")
        self.mode = mode

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TTAExpand(_TTALayer):
    """(N, H, W, C) -> (K*N, H, W, C): the K views of every image, view-major."""

    def call(self, x: Any) -> Any:
        views = TTA_VIEWS[self.mode]
        if len(views) == 1:
            return x
        return ops.concatenate([apply_view(x, view) for view in views], axis=0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        batch = input_shape[0]
        k = len(TTA_VIEWS[self.mode])
        return (None if batch is None else batch * k, *input_shape[1:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class TTAMerge(_TTALayer):
    """(K*N, h, w, C) maps of the K views -> (N, h, w, C): each mapped back to the original, averaged."""

    def call(self, x: Any) -> Any:
        views = TTA_VIEWS[self.mode]
        k = len(views)
        if k == 1:
            return x
        shape = ops.shape(x)
        stacked = ops.reshape(x, (k, -1, shape[1], shape[2], shape[3]))
        restored = [apply_view(stacked[i], view, inverse=True) for i, view in enumerate(views)]
        return ops.mean(ops.stack(restored, axis=0), axis=0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        batch = input_shape[0]
        k = len(TTA_VIEWS[self.mode])
        return (None if batch is None else batch // k, *input_shape[1:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogSumExpPool(keras.layers.Layer):
    """(N, h, w, 1) logit map -> (N, 1) image logit: a smooth maximum, log(mean(exp(r * map))) / r.

    r -> 0 is the mean (global average pooling), r -> infinity the maximum. Unlike the mean, it lets one
    strongly fractured location decide the image, so training pushes the evidence onto the fracture
    instead of spreading it over the image (the mean-pooled model put its peak in the background).
    """

    def __init__(self, sharpness: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if sharpness <= 0:
            raise ValueError("sharpness must be positive")
        self.sharpness = float(sharpness)

    def call(self, x: Any) -> Any:
        r = self.sharpness
        flat = ops.reshape(x, (ops.shape(x)[0], -1))
        count = ops.cast(ops.shape(flat)[1], flat.dtype)
        return (ops.logsumexp(r * flat, axis=1, keepdims=True) - ops.log(count)) / r

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sharpness": self.sharpness}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TTAMean(_TTALayer):
    """(K*N, D) per-view vectors (view-major, as TTAExpand made them) -> (N, D): their mean over the views.

    For features that carry no position (pooled embeddings), so nothing is to be mapped back."""

    def call(self, x: Any) -> Any:
        k = len(TTA_VIEWS[self.mode])
        if k == 1:
            return x
        return ops.mean(ops.reshape(x, (k, -1, ops.shape(x)[-1])), axis=0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        batch = input_shape[0]
        k = len(TTA_VIEWS[self.mode])
        return (None if batch is None else batch // k, *input_shape[1:])
