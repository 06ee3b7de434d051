"""Small, real model artifacts for other packages' tests and benchmarks.

``write_tiny_artifact`` builds a random few-thousand-parameter model with the same serving interface as
the shipped one (``{"logit", "cam"}`` outputs, a valid card), so the app's tests exercise the real
Predictor code path in well under a second.
"""

from __future__ import annotations

from pathlib import Path

from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
from classifier.preprocessing import InputSpec


def write_tiny_artifact(dest_dir: Path, *, version: str = "tiny-test") -> Path:
    """Write ``model.keras`` + ``card.json`` of a tiny random CAM model to ``dest_dir``; return it."""
    return _write_artifact(Path(dest_dir), arch="tiny", size=32, tta="none", version=version)


def write_untrained_artifact(
    dest_dir: Path, *, size: int = 224, tta: str = "flip", version: str = "untrained-lite0"
) -> Path:
    """A full-size EfficientNet-Lite0 CAM model with random weights, as costly as the shipped one."""
    return _write_artifact(Path(dest_dir), arch="lite0", size=size, tta=tta, version=version)


def _write_artifact(dest_dir: Path, *, arch: str, size: int, tta: str, version: str) -> Path:
    import keras

    from classifier.models import build_core, serving_model

    keras.utils.set_random_seed(0)
    kwargs = {"seed": 0} if arch == "tiny" else {}
    core = build_core(arch, size, **kwargs)
    model = serving_model(core, tta=tta)
    dest_dir.mkdir(parents=True, exist_ok=True)
    model.save(dest_dir / MODEL_FILE)
    card = new_card(
        version=version,
        architecture={"name": arch, "tta": tta, "trained": False},
        input_spec=InputSpec(size=size),
        calibration={"method": "identity"},
        threshold=0.5,
        notes="Random weights, for tests and benchmarks only: its predictions mean nothing.",
    )
    write_card(card, dest_dir / CARD_FILE)
    return dest_dir
