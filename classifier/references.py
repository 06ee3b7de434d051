"""What a released model keeps of its data, to notice input it was not made for: the out-of-distribution
reference (embeddings), the colour check and the drift references (score, intensity and size histograms).

All are fitted on training and val images and stored in the model card (``card["ood"]``,
``card["reference"]``); the app compares each new radiograph, and each period's inputs, with them
(``classifier.card.ood_distances``, ``classifier.card.colour_share``). Used by ``classifier.release``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classifier.card import COLOUR_CHROMA_LEVEL, COLOUR_THUMBNAIL, colour_share, ood_distances
from classifier.data import Record
from classifier.decoding import decode_grayscale
from classifier.scoring import Scored

OOD_QUANTILE = 0.99
OOD_COMPONENTS = 64
# The colour check's threshold: at least a tenth of the picture clearly coloured, and at least twice the
# most coloured val radiograph (grey content with a coloured marker or ruler stays well under it).
COLOUR_MIN_THRESHOLD = 0.10


def ood_reference(
    train: Scored, val: Scored, *, components: int = OOD_COMPONENTS, in_sample: bool = False
) -> dict[str, Any]:
    """Mahalanobis distance of an embedding in the top principal components of the training embeddings.

    The per-dimension standardised distance (the first release's) let a photo and a chest CT slice through:
    their embeddings differ from radiographs' in directions along which radiographs vary together, which a
    per-dimension scale cannot see (bench/ood.py measured both on the non-radiograph fixtures).
    """
    centroid = train.embeddings.astype(np.float64).mean(axis=0)
    diff = train.embeddings.astype(np.float64) - centroid
    _, singular, vt = np.linalg.svd(diff, full_matrices=False)
    k = min(components, len(singular))
    variances = singular[:k] ** 2 / max(len(diff) - 1, 1)
    ood: dict[str, Any] = {
        "method": "pca_mahalanobis",
        "centroid": [round(float(v), 6) for v in centroid],
        "components": [[round(float(v), 6) for v in row] for row in vt[:k]],
        "variances": [float(v) for v in variances],
    }
    fitted_on = (
        f"centre and {k} principal components: {len(train.records)} training images; threshold: the "
        f"{OOD_QUANTILE:.0%} quantile (the next higher distance) of {len(val.records)} "
        f"{'val (trained on: in-sample)' if in_sample else 'val'} images' distances"
    )
    threshold = ood_threshold(ood_distances(val.embeddings, ood), val.sources)
    return ood | threshold | {"fitted_on": fitted_on, "threshold_in_sample": in_sample}


def ood_threshold(distances: np.ndarray, sources: np.ndarray) -> dict[str, Any]:
    """The OOD threshold on val distances: the 99 % quantile taken as the next higher observed distance, so
    that at most 1 % of val is flagged (linear interpolation flagged 11 of 1,007, 1.09 %), with the flag rate
    overall and per source."""
    distances = np.asarray(distances, np.float64)
    threshold = float(np.quantile(distances, OOD_QUANTILE, method="higher"))
    flagged = distances > threshold
    return {
        "threshold": threshold,
        "in_distribution_flag_rate": float(np.mean(flagged)),
        "in_distribution_flag_rate_per_source": {
            str(s): float(np.mean(flagged[sources == s])) for s in sorted(set(np.asarray(sources).tolist()))
        },
    }


def colour_reference(val: Sequence[Record], test: Sequence[Record]) -> dict[str, Any]:
    """The colour check (card["ood"]["colour"]): the share of clearly coloured pixels on the original image
    (classifier.card.colour_share), measured on every val and test radiograph of every source.

    Radiographs are grey, so the threshold is not a quantile of val (that would flag 1 % of grey images for
    JPEG colour noise): it is max(COLOUR_MIN_THRESHOLD, twice the val maximum), and the val and test flag
    rates, which must stay at or under 1 %, are recorded beside it.
    """

    def shares(records: Sequence[Record]) -> np.ndarray:
        return np.array([colour_share(r.path.read_bytes()) for r in records], np.float64)

    val_shares, test_shares = shares(val), shares(test)
    val_sources = np.array([r.source for r in val])
    threshold = max(COLOUR_MIN_THRESHOLD, 2.0 * float(val_shares.max(initial=0.0)))
    return {
        "statistic": f"share of pixels with max(R,G,B) - min(R,G,B) > {COLOUR_CHROMA_LEVEL} on the original "
        f"image, at most {COLOUR_THUMBNAIL} px a side",
        "threshold": threshold,
        "val_max": float(val_shares.max(initial=0.0)),
        "val_max_per_source": {
            str(s): float(val_shares[val_sources == s].max()) for s in sorted(set(val_sources.tolist()))
        },
        "in_distribution_flag_rate": float(np.mean(val_shares > threshold)) if len(val) else 0.0,
        "test_flag_rate": float(np.mean(test_shares > threshold)) if len(test) else 0.0,
        "fitted_on": f"{len(val)} val images: max({COLOUR_MIN_THRESHOLD}, twice the val maximum)",
    }


def histogram(values: np.ndarray, edges: Sequence[float]) -> dict[str, list[float]]:
    counts, _ = np.histogram(values, bins=np.asarray(edges, dtype=np.float64))
    total = max(int(counts.sum()), 1)
    return {"edges": [float(e) for e in edges], "fractions": [round(float(c) / total, 6) for c in counts]}


def drift_reference(records: Sequence[Record], probabilities: np.ndarray) -> dict[str, Any]:
    """Score, pixel-intensity and size histograms of the val images (decoded as the app decodes them)."""
    intensity = np.zeros(16, np.int64)
    sides = []
    for r in records:
        gray = decode_grayscale(r.path.read_bytes())
        intensity += np.bincount((gray >> 4).ravel(), minlength=16)
        sides.append(max(gray.shape))
    total = max(int(intensity.sum()), 1)
    return {
        "score": histogram(probabilities, [i / 10 for i in range(11)]),
        "intensity": {
            "edges": [float(e) for e in range(0, 257, 16)],
            "fractions": [round(float(c) / total, 6) for c in intensity],
        },
        "long_side": histogram(np.array(sides), [0, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 100000]),
        "images": len(records),
    }
