"""The model card: the JSON that travels with every ``.keras`` file.

It holds everything needed to serve the model exactly as it was trained and evaluated (input spec,
class names, calibration, operating threshold) and what is known about it (training data fingerprint,
metrics with intervals). No Keras import: the web process may read cards.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classifier.decoding import sniff_format
from classifier.preprocessing import InputSpec

SCHEMA_VERSION = 1
CLASS_NAMES = ("not_fractured", "fractured")
POSITIVE_CLASS = "fractured"
MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
REPORT_FILE = "report.md"

REQUIRED_KEYS = ("schema", "version", "architecture", "input", "class_names", "calibration", "threshold")


class CardError(ValueError):
    """A model card is missing, unreadable or inconsistent."""


def calibrate(logits: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """Calibrated probabilities from raw logits: ``sigmoid(a * logit + b)`` (Platt / temperature)."""
    method = calibration.get("method", "identity")
    logits = np.asarray(logits, dtype=np.float64)
    if method == "identity":
        z = logits
    elif method in ("platt", "temperature"):
        z = float(calibration.get("a", 1.0)) * logits + float(calibration.get("b", 0.0))
    else:
        raise CardError(f"unknown calibration method {method!r}")
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def ood_distances(embeddings: np.ndarray, ood: Mapping[str, Any]) -> np.ndarray:
    """Distance of each embedding (N, D) to the training embeddings, by the card's ``ood`` method:

    - "pca_mahalanobis": Mahalanobis distance in the top-k principal components of the training embeddings
      ("components": k x D, "variances": k);
    - "mahalanobis_diag": root-mean-square of the per-dimension standardised difference ("scale": the
      training standard deviation per dimension);
    - "euclidean": root-mean-square difference to the centroid.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    centroid = np.asarray(ood["centroid"], dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != centroid.shape[0]:
        raise ValueError(f"embeddings {e.shape} do not match the card's centroid ({centroid.shape[0]} dims)")
    diff = e - centroid
    if ood.get("method") == "pca_mahalanobis":
        components = np.asarray(ood["components"], dtype=np.float64)
        variances = np.maximum(np.asarray(ood["variances"], dtype=np.float64), 1e-12)
        projected = diff @ components.T
        return np.sqrt(np.sum(projected * projected / variances, axis=1))
    if ood.get("method", "mahalanobis_diag") == "mahalanobis_diag" and ood.get("scale") is not None:
        diff = diff / np.maximum(np.asarray(ood["scale"], dtype=np.float64), 1e-6)
    return np.sqrt(np.mean(diff * diff, axis=1))


# The colour check beside the embedding distance: radiographs are grey (a few coloured marks at most), a
# photograph or a screenshot is not, and the grayscale conversion before the model hides that from the
# embedding. Measured on the original RGB, on a thumbnail of at most COLOUR_THUMBNAIL px a side.
COLOUR_CHROMA_LEVEL = 32  # of 255: max(R, G, B) - min(R, G, B) above this is "clearly coloured"
COLOUR_THUMBNAIL = 256
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def colour_share(data: bytes) -> float:
    """The share of an image's pixels that are clearly coloured (chroma > COLOUR_CHROMA_LEVEL), 0..1.

    0.0 for grey-mode files, DICOM (its modality has its own check) and anything Pillow cannot open
    (the decoder then says why the file is unreadable). JPEGs are decoded at reduced scale (draft mode),
    so the check costs a few milliseconds.
    """
    kind = sniff_format(bytes(data))
    if kind is None or kind == "DICOM":
        return 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=[kind])
            if opened.mode in _GREY_MODES:
                return 0.0
            if kind == "JPEG":
                opened.draft("RGB", (COLOUR_THUMBNAIL, COLOUR_THUMBNAIL))
            rgb = opened.convert("RGB")
            rgb.thumbnail((COLOUR_THUMBNAIL, COLOUR_THUMBNAIL))
            pixels = np.asarray(rgb, dtype=np.int16)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError, ValueError):
        return 0.0
    if pixels.ndim != 3 or pixels.size == 0:
        return 0.0
    chroma = pixels.max(axis=2) - pixels.min(axis=2)
    return float(np.mean(chroma > COLOUR_CHROMA_LEVEL))


def new_card(
    *,
    version: str,
    architecture: Mapping[str, Any],
    input_spec: InputSpec,
    calibration: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    **extra: Any,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "version": version,
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "architecture": dict(architecture),
        "input": input_spec.to_dict(),
        "preprocessing": (
            "classifier.preprocessing: decode_grayscale (DICOM VOI/window, MONOCHROME1 inverted), longer "
            f"side scaled to {input_spec.size} px (INTER_AREA), centred on black padding"
            + (", CLAHE" if input_spec.clahe else "")
            + ", pixels / 255"
        ),
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "outputs": {
            "logit": "fracture logit (N, 1) before calibration",
            "cam": "class-activation map of logits (N, h, w) over the square model input",
        },
        "calibration": dict(calibration or {"method": "identity"}),
        "threshold": float(threshold),
    }
    card.update(extra)
    validate_card(card)
    return card


def validate_card(card: Mapping[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in card]
    if missing:
        raise CardError(f"model card lacks {missing}")
    if card["schema"] != SCHEMA_VERSION:
        raise CardError(f"model card schema {card['schema']!r} is not {SCHEMA_VERSION}")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise CardError(f"model card class names {card['class_names']!r} are not {list(CLASS_NAMES)}")
    threshold = card["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
        raise CardError(f"model card threshold {threshold!r} is not a probability")
    InputSpec.from_dict(card["input"])
    calibrate(np.zeros(1), card["calibration"])


def json_default(value: Any) -> Any:
    """``json.dumps``'s default for the numpy values a card or a metrics file holds (NaN as None)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_json(value: Any) -> Any:
    """A figure tree with NaN and infinities as None (JSON has no NaN; "not measurable" is what they mean)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_card(card: Mapping[str, Any], path: Path) -> Path:
    validate_card(card)
    path.write_text(json.dumps(card, indent=2, default=json_default, allow_nan=False) + "\n")
    return path


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise CardError(f"no model card at {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"unreadable model card at {path}: {exc}") from exc
    if not isinstance(card, dict):
        raise CardError(f"model card at {path} is not a JSON object")
    validate_card(card)
    return card


def resolve_artifact(path: Path) -> tuple[Path, Path]:
    """A model directory, or a ``.keras`` file with ``card.json`` beside it -> (model file, card file)."""
    path = Path(path)
    if path.is_dir():
        model_file, card_file = path / MODEL_FILE, path / CARD_FILE
    elif path.suffix == ".keras":
        model_file, card_file = path, path.with_name(CARD_FILE)
    else:
        raise CardError(f"{path} is neither a model directory nor a .keras file")
    if not model_file.is_file():
        raise CardError(f"no model file at {model_file}")
    if not card_file.is_file():
        raise CardError(f"no model card at {card_file}")
    return model_file, card_file
