"""Serve a versioned model artifact: ``Predictor`` and its command line.

    python -m classifier.predict [--model PATH] [--heatmaps DIR] IMAGE...

prints one JSON object per image (path, probability, band, boxes, label, model_version, ...), using the
shipped model in ``models/`` unless ``--model`` names another. A model directory holds ``model.keras``
and ``card.json``.

Keras is imported when a model is loaded, not when this module is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.card import (
    CLASS_NAMES,
    POSITIVE_CLASS,
    CardError,
    calibrate,
    read_card,
    resolve_artifact,
)
from classifier.cells import Box, BoxRule
from classifier.decoding import UnreadableImageError, decode_grayscale
from classifier.explain import cam_to_heatmap
from classifier.preprocessing import InputSpec, prepare_batch, unletterbox

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_VERSION = "lite0-det-v2.4"
HEATMAP_MAX_SIDE = 512


def default_model_path() -> Path:
    """The shipped model's directory in ``models/`` (the CLI's and the app's default)."""
    return MODELS_DIR / DEFAULT_MODEL_VERSION


BANDS = ("fracture", "doubt", "no_fracture")
BAND_LABELS = {"fracture": "Fracture", "doubt": "Doubt", "no_fracture": "No fracture"}


@dataclass(frozen=True)
class OperatingPoints:
    """The card's two thresholds on the calibrated probability (the way cleared fracture products report).

    ``sensitive``: below it, "no fracture" (fitted for sensitivity >= 0.95 on every source);
    ``specific``: at or above it, "fracture" (fitted for specificity >= 0.95 on every source);
    between them, "doubt".
    """

    sensitive: float
    specific: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.sensitive <= self.specific <= 1.0:
            raise CardError(
                f"operating points out of order: sensitive {self.sensitive}, specific {self.specific}"
            )

    def band(self, probability: float) -> str:
        if probability >= self.specific:
            return "fracture"
        if probability >= self.sensitive:
            return "doubt"
        return "no_fracture"

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> OperatingPoints:
        points = card.get("operating_points")
        if points is None:  # a card from before the two operating points: one threshold, no doubt band
            threshold = float(card["threshold"])
            return cls(threshold, threshold)
        return cls(float(points["sensitive"]), float(points["specific"]))


@dataclass(frozen=True)
class ImagePrediction:
    """One radiograph's result.

    ``probability``: calibrated probability of a fracture. ``band``: "fracture" / "doubt" / "no_fracture"
    from the card's two operating points. ``label``: "fractured" unless the band is "no_fracture" (the
    binary call at the sensitive operating point, for agreement figures). ``boxes``: where the model sees a
    fracture, in original-image pixels (EXIF-applied frame), best first, each with its cell probability.
    ``heatmap``: float32 in [0, 1] over the original image (same aspect ratio, padding removed), the
    fracture-cell probabilities (an absolute scale, not min-max) for a model with a cell head, else the
    min-max CAM; None when not asked for. ``logit``: the raw (uncalibrated) logit. ``embedding``: the
    backbone's pooled features (for out-of-distribution checks), when the model exposes them.
    """

    probability: float
    label: str
    band: str = "no_fracture"
    boxes: tuple[Box, ...] = ()
    heatmap: np.ndarray | None = None
    logit: float = 0.0
    embedding: np.ndarray | None = None


class Predictor:
    """A loaded model with its card. Load once per process; ``predict`` runs one batched forward pass."""

    def __init__(self, model: Any, card: dict[str, Any], *, path: Path | None = None) -> None:
        self.model = model
        self.card = card
        self.path = path
        self.version: str = str(card["version"])
        self.thresholds = OperatingPoints.from_card(card)
        # The binary label's threshold: the sensitive operating point (everything below is "no fracture").
        self.threshold: float = self.thresholds.sensitive
        self.class_names: tuple[str, ...] = tuple(card["class_names"])
        self.input_spec = InputSpec.from_dict(card["input"])
        self.calibration: dict[str, Any] = dict(card["calibration"])
        self.box_rule = BoxRule.from_card(card)
        expected = (self.input_spec.size, self.input_spec.size, 1)
        got = tuple(model.input_shape[1:])
        if got != expected:
            raise CardError(f"model input {got} does not match the card's input size {expected}")
        outputs = model.output if isinstance(model.output, dict) else {}
        if "logit" not in outputs:
            raise CardError("the model has no 'logit' output: not a serving model")
        self.has_cam = "cam" in outputs
        self.has_cells = "cells" in outputs
        self.has_embedding = "embedding" in outputs

    @property
    def box_threshold(self) -> float:
        return self.box_rule.threshold

    @classmethod
    def load(cls, path: str | Path, *, warmup: bool = False) -> Predictor:
        """Load ``model.keras`` + ``card.json`` from a model directory (or a ``.keras`` path beside its card).

        ``warmup`` runs one dummy batch so that the first real request does not pay for graph tracing.
        """
        model_file, card_file = resolve_artifact(Path(path))
        card = read_card(card_file)
        import keras

        import classifier.layers  # noqa: F401  (registers the custom layers before deserialising)

        model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
        predictor = cls(model, card, path=model_file.parent)
        if warmup:
            predictor.warmup()
        return predictor

    def warmup(self, batch_sizes: Sequence[int] = (1, 2)) -> None:
        """Trace the forward pass (two shapes make the graph batch-size agnostic)."""
        size = self.input_spec.size
        for n in batch_sizes:
            self.forward(np.zeros((n, size, size, 1), np.float32))

    def forward(self, batch: np.ndarray) -> ForwardPass:
        """Raw model call on a prepared batch (N, S, S, 1)."""
        n = len(batch)
        if n == 0:
            return ForwardPass(np.zeros(0, np.float32))
        out = self.model.predict_on_batch(batch)

        def optional(name: str) -> np.ndarray | None:
            return np.asarray(out[name], dtype=np.float32) if name in out else None

        logits = np.asarray(out["logit"], dtype=np.float32).reshape(n)
        cells = optional("cells")
        return ForwardPass(
            logits,
            cams=optional("cam"),
            cells=None if cells is None else 1.0 / (1.0 + np.exp(-cells)),
            embeddings=optional("embedding"),
        )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return calibrate(logits, self.calibration)

    def band_for(self, probability: float) -> str:
        return self.thresholds.band(probability)

    def label_for(self, probability: float) -> str:
        return CLASS_NAMES[0] if self.band_for(probability) == "no_fracture" else POSITIVE_CLASS

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The backbone's pooled features (N, D) of 2-D uint8 images; (N, 0) for a model without them."""
        batch, _ = prepare_batch(images, self.input_spec)
        embeddings = self.forward(batch).embeddings
        return embeddings if embeddings is not None else np.zeros((len(images), 0), np.float32)

    def predict(
        self, images: Sequence[np.ndarray], *, heatmaps: bool = True, embeddings: bool = False
    ) -> list[ImagePrediction]:
        """2-D uint8 grayscale images (as from ``decode_grayscale``) -> one prediction each, in order."""
        if len(images) == 0:
            return []
        batch, geometries = prepare_batch(images, self.input_spec)
        forward = self.forward(batch)
        probabilities = self.probabilities(forward.logits)
        results = []
        for i, geometry in enumerate(geometries):
            heatmap = None
            boxes: tuple[Box, ...] = ()
            if forward.cells is not None:
                boxes = tuple(self.box_rule.boxes(forward.cells[i], geometry))
                if heatmaps:
                    heatmap = np.clip(
                        unletterbox(forward.cells[i], geometry, max_side=HEATMAP_MAX_SIDE), 0, 1
                    )
            elif heatmaps and forward.cams is not None:
                heatmap = cam_to_heatmap(forward.cams[i], geometry, max_side=HEATMAP_MAX_SIDE)
            probability = float(probabilities[i])
            results.append(
                ImagePrediction(
                    probability=probability,
                    label=self.label_for(probability),
                    band=self.band_for(probability),
                    boxes=boxes,
                    heatmap=heatmap,
                    logit=float(forward.logits[i]),
                    embedding=(
                        forward.embeddings[i] if embeddings and forward.embeddings is not None else None
                    ),
                )
            )
        return results


@dataclass(frozen=True)
class ForwardPass:
    """What one model call returns: logits (N,), and where the model has them: CAMs (N, h, w), fracture-cell
    probabilities (N, h, w) and pooled backbone features (N, D)."""

    logits: np.ndarray
    cams: np.ndarray | None = None
    cells: np.ndarray | None = None
    embeddings: np.ndarray | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG, GIF or DICOM files")
    parser.add_argument("--model", type=Path, default=None, help="model directory or .keras file")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--heatmaps", type=Path, default=None, help="write an RGBA PNG overlay per image here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    model_path = args.model or default_model_path()
    try:
        predictor = Predictor.load(model_path)
    except (CardError, OSError, ValueError) as exc:
        log.error("cannot load the model at %s: %s", model_path, exc)
        return 2
    if args.heatmaps:
        args.heatmaps.mkdir(parents=True, exist_ok=True)

    failed = 0
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        readable: list[tuple[Path, np.ndarray]] = []
        for path in paths:
            try:
                readable.append((path, decode_grayscale(path.read_bytes())))
            except (UnreadableImageError, OSError) as exc:
                failed += 1
                reason = str(exc) if isinstance(exc, UnreadableImageError) else "The file cannot be read."
                _emit({"path": str(path), "error": reason, "model_version": predictor.version})
        if not readable:
            continue
        started = time.perf_counter()
        predictions = predictor.predict([gray for _, gray in readable], heatmaps=args.heatmaps is not None)
        elapsed_ms = (time.perf_counter() - started) * 1000 / len(readable)
        for (path, gray), prediction in zip(readable, predictions, strict=True):
            record: dict[str, Any] = {
                "path": str(path),
                "probability": round(prediction.probability, 6),
                "band": prediction.band,
                "boxes": [box.as_dict() for box in prediction.boxes],
                "label": prediction.label,
                "model_version": predictor.version,
                "operating_points": {
                    "sensitive": predictor.thresholds.sensitive,
                    "specific": predictor.thresholds.specific,
                },
                "logit": round(prediction.logit, 6),
                "ms_per_image": round(elapsed_ms, 1),
            }
            if args.heatmaps is not None and prediction.heatmap is not None:
                from classifier.explain import heatmap_to_png

                out = args.heatmaps / f"{path.stem}.heatmap.png"
                out.write_bytes(heatmap_to_png(prediction.heatmap, gray.shape[1], gray.shape[0]))
                record["heatmap"] = str(out)
            _emit(record)
    return 1 if failed else 0


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
