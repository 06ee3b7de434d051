"""What training draws from the records: grouped cross-validation folds, loss weights, and the augmented
``tf.data`` pipeline over the cached images.

The records and the decoded-image cache are ``classifier.data``'s; this module decides how a training run
sees them. TensorFlow loads on first use only (inside ``training_dataset`` and the augmentation ops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from classifier.data import ImageSet, Record
from classifier.preprocessing import PIXEL_SCALE

# ---------------------------------------------------------------------------------- grouped CV folds


def grouped_folds(
    records: Sequence[Record], n_folds: int, *, seed: int = 0, max_held_cluster: int | None = None
) -> np.ndarray:
    """Fold index per record: whole clusters per fold, stratified by source and label.

    scikit-learn's StratifiedGroupKFold on the (source, label) stratum with clusters as groups. Clusters
    larger than ``max_held_cluster`` images get fold -1: always trained on, never held out, as the
    curated Kaggle split keeps its clusters over 40 images in train (held out, one such cluster would
    outweigh dozens of radiographs in every per-image figure).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.array([r.cluster for r in records])
    folds = np.full(len(records), -1, np.int64)
    eligible = np.ones(len(records), bool)
    if max_held_cluster is not None:
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        eligible = counts[inverse] <= max_held_cluster
    index = np.flatnonzero(eligible)
    strata = np.array([f"{records[int(i)].source}:{records[int(i)].label}" for i in index])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(index)), strata, groups[index])):
        folds[index[held]] = k
    return folds


# ------------------------------------------------------------------------------------ augmentation


@dataclass(frozen=True)
class AugmentSpec:
    """On-the-fly augmentation of the letterboxed images (the seeds' list, with strengths).

    Geometry: horizontal flip, vertical flip, right-angle rotation (``rot90``), rotation by up to
    ``rotation`` degrees, zoom in [1 - zoom, 1 + zoom], shift by up to ``shift`` of the side.
    Intensity (on the image content only, never on the padding): brightness +- ``brightness``,
    contrast x [1 - contrast, 1 + contrast], gamma in [1 - gamma, 1 + gamma].
    """

    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    rotation: float = 15.0
    zoom: float = 0.1
    shift: float = 0.08
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentSpec:
        return cls(**values)

    def with_(self, **changes: Any) -> AugmentSpec:
        return replace(self, **changes)


class RandomKeys:
    """Stateless random keys for one batch: draw k folds k into the batch's key (seed, batch index).

    Stateful random ops inside a parallel ``Dataset.map`` share one generator between the calls in flight,
    so which batch got which rotation depended on thread timing, and two runs of one seed trained two
    different models. A batch's augmentation now depends on the seed and its position in the stream only.
    """

    def __init__(self, tf: Any, key: Any) -> None:
        self._tf = tf
        self._key = key
        self._drawn = 0

    def __call__(self) -> Any:
        self._drawn += 1
        return self._tf.random.experimental.stateless_fold_in(self._key, self._drawn)

    def uniform(self, shape: Any, low: float = 0.0, high: float = 1.0) -> Any:
        return self._tf.random.stateless_uniform(shape, seed=self(), minval=low, maxval=high)


def batch_key(tf: Any, seed: int, batch_index: Any) -> Any:
    """The key of batch number ``batch_index`` (from ``Dataset.enumerate``) of a run seeded ``seed``."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(batch_index, tf.int64)])


def _affine_matrices(tf: Any, n: Any, size: int, aug: AugmentSpec, keys: RandomKeys) -> Any:
    """(n, 8) projective transforms (output -> input coordinates) for ImageProjectiveTransformV3."""
    pi = np.float32(np.pi)
    angle = keys.uniform([n], -aug.rotation, aug.rotation) * (pi / 180.0)
    if aug.rot90:
        quarter = tf.random.stateless_uniform([n], seed=keys(), minval=0, maxval=4, dtype=tf.int32)
        angle = angle + tf.cast(quarter, tf.float32) * (pi / 2)
    scale = keys.uniform([n], 1.0 - aug.zoom, 1.0 + aug.zoom)
    shift_x = keys.uniform([n], -aug.shift, aug.shift) * size
    shift_y = keys.uniform([n], -aug.shift, aug.shift) * size
    sx = tf.ones([n])
    sy = tf.ones([n])
    if aug.hflip:
        sx = tf.where(keys.uniform([n]) < 0.5, -1.0, 1.0)
    if aug.vflip:
        sy = tf.where(keys.uniform([n]) < 0.5, -1.0, 1.0)
    # Output pixel p maps to input A^-1 (p - c - t) + c, with A = zoom * R(angle) * diag(sx, sy).
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    inv = 1.0 / scale
    a00 = inv * cos * sx
    a01 = inv * sin * sx
    a10 = -inv * sin * sy
    a11 = inv * cos * sy
    px = -shift_x - c
    py = -shift_y - c
    b0 = a00 * px + a01 * py + c
    b1 = a10 * px + a11 * py + c
    zeros = tf.zeros([n])
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment_batch(
    tf: Any, images: Any, boxes: Any, size: int, aug: AugmentSpec, keys: RandomKeys, masks: Any = None
) -> Any:
    """uint8 (n, S, S) + content boxes (n, 4) -> augmented float32 (n, S, S, 1) in [0, 1].

    With ``masks`` (n, S, S) or (n, S, S, k) (fracture-box masks), returns (images, masks (n, S, S, k)) with
    the masks moved by the same geometric transform (intensity changes apply to the images only).
    """
    n = tf.shape(images)[0]
    x = tf.cast(images, tf.float32)[..., None] * PIXEL_SCALE
    rows = tf.range(size)[None, :, None]
    cols = tf.range(size)[None, None, :]
    top, left, height, width = (boxes[:, i][:, None, None] for i in range(4))
    mask = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    mask = tf.cast(mask, tf.float32)[..., None]
    if aug.brightness or aug.contrast or aug.gamma:
        if aug.gamma:
            g = keys.uniform([n, 1, 1, 1], 1.0 - aug.gamma, 1.0 + aug.gamma)
            x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), g)
        area = tf.reduce_sum(mask, axis=[1, 2, 3], keepdims=True) + 1.0
        mean = tf.reduce_sum(x * mask, axis=[1, 2, 3], keepdims=True) / area
        c = keys.uniform([n, 1, 1, 1], 1.0 - aug.contrast, 1.0 + aug.contrast)
        b = keys.uniform([n, 1, 1, 1], -aug.brightness, aug.brightness)
        x = tf.clip_by_value((x - mean) * c + mean + b, 0.0, 1.0) * mask
    transforms = _affine_matrices(tf, n, size, aug, keys)
    if masks is not None:
        channels = tf.cast(masks, tf.float32)
        x = tf.concat([x, channels if channels.shape.rank == 4 else channels[..., None]], axis=-1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    x = tf.clip_by_value(x, 0.0, 1.0)
    if masks is not None:
        return x[..., :1], x[..., 1:]
    return x


def training_dataset(
    data: ImageSet,
    *,
    batch_size: int,
    augment: AugmentSpec,
    seed: int,
    balance_sources: bool = False,
    cluster_power: float = 0.0,
    class_balance: str = "source",
    steps_per_epoch: int | None = None,
) -> Any:
    """An endless, shuffled, augmented ``tf.data.Dataset`` of (images (B,S,S,1), labels (B,1), weights (B,)).

    Each class gets half of the total weight within every source (class-balanced loss). With
    ``balance_sources`` every source also gets the same total weight, whatever its size.
    """
    import tensorflow as tf

    labels = data.labels.astype(np.float32)
    weights = sample_weights(
        data, balance_sources=balance_sources, cluster_power=cluster_power, class_balance=class_balance
    )
    boxes = data.content_boxes()
    size = data.spec.size
    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(labels)))
    ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True).enumerate()

    images_const = data.images

    def gather(batch_index: Any, index: Any) -> Any:
        imgs = tf.numpy_function(lambda i: images_const[i], [index], tf.uint8)
        imgs.set_shape([batch_size, size, size])
        return (
            batch_key(tf, seed, batch_index),
            imgs,
            tf.gather(tf.constant(boxes), index),
            tf.gather(tf.constant(labels), index),
            tf.gather(tf.constant(weights), index),
        )

    def aug(key: Any, imgs: Any, bxs: Any, y: Any, w: Any) -> Any:
        return augment_batch(tf, imgs, bxs, size, augment, RandomKeys(tf, key)), y[:, None], w

    ds = ds.map(gather, num_parallel_calls=2).map(aug, num_parallel_calls=2)
    return ds.prefetch(2)


def sample_weights(
    data: ImageSet,
    *,
    balance_sources: bool = False,
    cluster_power: float = 0.0,
    class_balance: str = "source",
) -> np.ndarray:
    """Loss weights: within each source each class weighs half; optionally each source equally.

    ``class_balance="global"`` balances the two classes over all sources together instead, which keeps
    each source's own prevalence in the model's logits (FracAtlas 1 : 5, Kaggle about 1 : 2), so that a
    single calibration can fit both sources.

    ``cluster_power`` p weighs each image by 1 / (its cluster's size)^p before the class balance: 0 counts
    images, 1 counts distinct radiographs (a 40-copy cluster weighs as much as one lone image).
    """
    labels = data.labels
    sources = data.sources
    _, inverse, counts = np.unique(data.clusters, return_inverse=True, return_counts=True)
    base = counts[inverse].astype(np.float64) ** (-cluster_power)
    weights = np.zeros(len(labels), np.float64)
    if class_balance == "global":
        for label in (0, 1):
            members = labels == label
            if members.any():
                weights[members] = 0.5 * base[members] / base[members].sum()
        return (weights * (len(labels) / weights.sum())).astype(np.float32)
    names = sorted(set(sources))
    for source in names:
        in_source = sources == source
        share = (1.0 / len(names)) if balance_sources else in_source.mean()
        for label in (0, 1):
            members = in_source & (labels == label)
            if members.any():
                weights[members] = share * 0.5 * base[members] / base[members].sum()
    return (weights * (len(labels) / weights.sum())).astype(np.float32)
