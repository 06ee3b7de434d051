"""Model architectures: the founding notebooks' ``seed`` CNN and the project's EfficientNet-Lite0 CAM model.

Every classifier here is built as a *core*: a Keras model from the prepared image (S, S, 1) in [0, 1] to a
class-activation map of logits (N, h, w, 1). Its spatial mean is the image logit, so a global-average-pool
plus dense head and its class-activation map are one and the same computation: the heatmap comes out of
the forward pass with no gradient. ``training_model`` adds the pooling for ``fit``; ``serving_model`` adds
test-time augmentation and returns ``{"logit", "cam"}``, the interface the Predictor relies on.

Keras 3 only (``keras.ops``, no ``tf.``), so the saved ``.keras`` files are backend-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
from keras import layers

from classifier.layers import TTA_VIEWS, LogSumExpPool, TTAExpand, TTAMerge

__all__ = [
    "ARCHITECTURES",
    "LITE0_BLOCKS",
    "LITE_VARIANTS",
    "build_core",
    "efficientnet_lite",
    "last_block_of_stage",
    "lite0_core",
    "lite_backbone",
    "lite_blocks",
    "logit_pooling",
    "seed_core",
    "serving_model",
    "tiny_core",
    "training_model",
]


@dataclass(frozen=True)
class BlockArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-Lite0 (width 1.0, depth 1.0): the B0 stages, ReLU6, no squeeze-excitation, stem 32, head 1280.
LITE0_BLOCKS: tuple[BlockArgs, ...] = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)
LITE0_FEATURES = 1280
BN_EPSILON = 1e-3
# The EfficientNet-Lite variants with registry ImageNet weights, by depth multiplier. Lite0 and Lite1 keep
# Lite0's widths (Lite2 widens them, which its converter would also have to round): Lite1 repeats each
# inner stage ceil(1.1 r) times; the first and last stages, the stem and the head are never scaled
# ("fix_head_stem" in the reference implementation).
LITE_VARIANTS: dict[str, float] = {"lite0": 1.0, "lite1": 1.1}


def lite_blocks(variant: str = "lite0") -> tuple[BlockArgs, ...]:
    """The stages of an EfficientNet-Lite variant (its blocks are numbered on through the stages)."""
    if variant not in LITE_VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; expected one of {list(LITE_VARIANTS)}"
        )
    depth = LITE_VARIANTS[variant]
    last = len(LITE0_BLOCKS) - 1
    return tuple(
        stage if i in (0, last) else replace(stage, repeats=math.ceil(depth * stage.repeats))
        for i, stage in enumerate(LITE0_BLOCKS)
    )


def last_block_of_stage(variant: str, stage: int) -> int:
    """The index of the last block of ``stage`` (0-based) in ``variant``'s block numbering."""
    return sum(b.repeats for b in lite_blocks(variant)[: stage + 1]) - 1


def _same_pad(x: Any, kernel: int, stride: int, name: str) -> Any:
    """TensorFlow "SAME" padding made explicit (pad k - s, the extra pixel at the end), for even inputs.

    Explicit zero padding + "valid" behaves identically on every Keras backend, and matches the
    reference PyTorch implementation's static padding.
    """
    total = kernel - stride if stride > 1 else kernel - 1
    before, after = total // 2, total - total // 2
    if total == 0:
        return x
    return layers.ZeroPadding2D(((before, after), (before, after)), name=name)(x)


def efficientnet_lite(
    input_tensor: Any, *, variant: str = "lite0", drop_connect_rate: float = 0.0, bn_momentum: float = 0.99
) -> Any:
    """EfficientNet-Lite feature extractor: normalised (N, S, S, C) -> (N, S/32, S/32, 1280).

    Layer names mirror the reference PyTorch state dict (``_blocks.3._depthwise_conv`` ->
    ``block3_dwconv``) so that ``classifier.convert`` can copy weights by name.
    """

    def bn(name: str) -> layers.BatchNormalization:
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name)

    x = _same_pad(input_tensor, 3, 2, "stem_pad")
    x = layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="stem_conv")(x)
    x = bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)

    stages = lite_blocks(variant)
    total_blocks = sum(b.repeats for b in stages)
    index = 0
    for stage in stages:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            filters_in = stage.filters_in if repeat == 0 else stage.filters_out
            prefix = f"block{index}_"
            inputs = x
            expanded = filters_in * stage.expand
            if stage.expand != 1:
                x = layers.Conv2D(expanded, 1, use_bias=False, name=prefix + "expand_conv")(x)
                x = bn(prefix + "bn0")(x)
                x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
            if stride > 1:
                x = _same_pad(x, stage.kernel, stride, prefix + "dwpad")
                pad = "valid"
            else:
                pad = "same"
            x = layers.DepthwiseConv2D(
                stage.kernel, strides=stride, padding=pad, use_bias=False, name=prefix + "dwconv"
            )(x)
            x = bn(prefix + "bn1")(x)
            x = layers.ReLU(6.0, name=prefix + "dw_relu")(x)
            x = layers.Conv2D(stage.filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
            x = bn(prefix + "bn2")(x)
            if stride == 1 and filters_in == stage.filters_out:
                rate = drop_connect_rate * index / total_blocks
                if rate > 0:
                    # Stochastic depth: drop the whole residual branch per sample.
                    x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
                x = layers.Add(name=prefix + "add")([x, inputs])
            index += 1

    x = layers.Conv2D(LITE0_FEATURES, 1, use_bias=False, name="head_conv")(x)
    x = bn("head_bn")(x)
    return layers.ReLU(6.0, name="head_relu")(x)


def lite_backbone(
    size: int,
    channels: int = 1,
    *,
    variant: str = "lite0",
    drop_connect_rate: float = 0.0,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """The backbone as its own model: image in [0, 1] (S, S, C) -> features (S/32, S/32, 1280).

    The ImageNet weights expect (x - 127) / 128 on 0..255 pixels, i.e. 255/128 * x - 127/128 on [0, 1].
    With a single grey channel the stem's kernel is the sum of its RGB kernels (a grey image is R=G=B).
    """
    if size % 32:
        raise ValueError(f"EfficientNet-Lite input size must be a multiple of 32, not {size}")
    image = keras.Input((size, size, channels), name="image")
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(image)
    features = efficientnet_lite(
        x, variant=variant, drop_connect_rate=drop_connect_rate, bn_momentum=bn_momentum
    )
    return keras.Model(image, features, name=f"efficientnet_{variant}")


def _cam_head(features: Any, *, dropout: float, name: str = "cam") -> Any:
    """1x1 convolution to one logit per location: its spatial mean equals GAP followed by Dense(1)."""
    if dropout > 0:
        # Spatial dropout of whole feature channels, the conv-head twin of dropout before the dense layer.
        features = layers.SpatialDropout2D(dropout, name="head_dropout")(features)
    return layers.Conv2D(1, 1, name=name)(features)


def lite0_core(
    size: int = 224,
    *,
    dropout: float = 0.2,
    drop_connect_rate: float = 0.2,
    backbone_weights: str | None = None,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """EfficientNet-Lite0 + CAM head: (S, S, 1) in [0, 1] -> logit map (S/32, S/32, 1).

    ``backbone_weights``: a ``.weights.h5`` written by ``python -m classifier.convert``.
    """
    backbone = lite_backbone(size, drop_connect_rate=drop_connect_rate, bn_momentum=bn_momentum)
    if backbone_weights:
        backbone.load_weights(backbone_weights)
    image = keras.Input((size, size, 1), name="image")
    cam = _cam_head(backbone(image), dropout=dropout)
    return keras.Model(image, cam, name="lite0_cam")


def seed_core(size: int = 128) -> keras.Model:
    """The founding notebooks' CNN: Conv32-Pool-Conv64-Pool-Flatten-Dense128-Dropout0.5-sigmoid.

    The notebooks fed 3-channel copies of the grey image; one channel carries the same information.
    Flatten + Dense has no class-activation map: its "map" is the logit itself, (1, 1).
    """
    image = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(image)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Dense(1, name="logit_dense")(x)  # the sigmoid lives in the loss / the Predictor
    cam = layers.Reshape((1, 1, 1), name="cam")(x)
    return keras.Model(image, cam, name="seed")


def tiny_core(size: int = 32, *, seed: int = 0) -> keras.Model:
    """A few-thousand-parameter CAM model with the real one's interface, for tests of the plumbing."""
    init = keras.initializers.GlorotUniform(seed=seed)
    image = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(image)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
    cam = layers.Conv2D(1, 1, kernel_initializer=init, name="cam")(x)
    return keras.Model(image, cam, name="tiny_cam")


ARCHITECTURES = ("lite0", "seed", "tiny")


def build_core(arch: str, size: int, **kwargs: Any) -> keras.Model:
    if arch == "lite0":
        return lite0_core(size, **kwargs)
    if arch == "seed":
        return seed_core(size)
    if arch == "tiny":
        return tiny_core(size, **kwargs)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


POOLINGS = ("mean", "lse")


def logit_pooling(pooling: str = "mean", *, sharpness: float = 1.0) -> keras.layers.Layer:
    """The layer that turns the logit map into the image logit: its mean, or a smooth maximum."""
    if pooling == "mean":
        return layers.GlobalAveragePooling2D(name="logit")
    if pooling == "lse":
        return LogSumExpPool(sharpness, name="logit")
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def training_model(core: keras.Model, *, pooling: str = "mean") -> keras.Model:
    """core -> (N, 1) logit: the pooled logit map, for ``fit`` with a from-logits loss."""
    image = keras.Input(core.input_shape[1:], name="image")
    logit = logit_pooling(pooling)(core(image))
    return keras.Model(image, logit, name=f"{core.name}_train")


def serving_model(core: keras.Model, *, tta: str = "none", pooling: str = "mean") -> keras.Model:
    """core -> {"logit": (N, 1), "cam": (N, h, w)} with test-time augmentation inside the graph.

    With ``tta`` = "flip" or "dihedral" every image runs as 2 or 8 flipped/transposed views in the same
    batch; their maps are mapped back onto the original orientation and averaged, so the logit and the
    map are exactly invariant to those views. ``pooling`` must be the one the core was trained with.
    """
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown TTA mode {tta!r}")
    image = keras.Input(core.input_shape[1:], name="image")
    views = TTAExpand(tta, name="tta_expand")(image)
    cam = TTAMerge(tta, name="tta_merge")(core(views))
    logit = logit_pooling(pooling)(cam)
    cam = layers.Reshape(tuple(core.output_shape[1:3]), name="cam_map")(cam)
    return keras.Model(image, {"logit": logit, "cam": cam}, name=f"{core.name}_serving")


def core_of(model: keras.Model) -> keras.Model:
    """The core inside a training or serving model (the one nested functional model)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"expected one nested core model in {model.name}, found {len(nested)}")
    return nested[0]


def count_params(model: keras.Model, *, trainable_only: bool = False) -> int:
    weights: Sequence[Any] = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(keras.ops.size(w)) for w in weights))
