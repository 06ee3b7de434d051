"""Operating points and bands: calibration and the two thresholds fitted on val, the band of a probability,
and what each band means on a held-out split.

A v2 model has two operating points fitted on val clusters: *sensitive* (the highest threshold with
sensitivity >= 0.95 on every source) and *specific* (the lowest with specificity >= 0.95 on every source).
A calibrated probability falls in **Fracture** at or above the specific one, **Doubt** between, **No
fracture** below the sensitive one. Used by ``classifier.release`` (both when choosing the test-time
augmentation and when releasing), never on test data before the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classifier.card import calibrate
from classifier.metrics import (
    bootstrap_interval,
    cluster_consistency,
    cluster_means,
    expected_calibration_error,
    fit_platt,
    region_aucs,
    reliability_bins,
    roc_auc,
    weighted_rates,
)
from classifier.scoring import Logits

SENSITIVITY_TARGET = 0.95
SPECIFICITY_TARGET = 0.95
# Band k of band_of, in order.
BAND_NAMES = ("no_fracture", "doubt", "fracture")


def cluster_weights(clusters: np.ndarray) -> np.ndarray:
    """1 / (the size of each image's cluster): every distinct radiograph weighs the same."""
    _, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def sensitive_threshold(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (p >= t) reaches ``target``."""
    positives = np.sort(probabilities[labels == 1])[::-1]
    needed = min(max(int(np.ceil(target * len(positives) - 1e-9)), 1), len(positives))
    return float(positives[needed - 1])


def specific_threshold(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """The lowest threshold whose specificity (p < t for negatives) reaches ``target``."""
    negatives = np.sort(probabilities[labels == 0])
    needed = min(max(int(np.ceil(target * len(negatives) - 1e-9)), 1), len(negatives))
    # Just above the needed-th lowest negative: that many negatives fall below.
    return float(np.nextafter(negatives[needed - 1], 1.0))


def fit_operating_points(scored: Logits, probabilities: np.ndarray, sources: Sequence[str]) -> dict[str, Any]:
    """Both thresholds on val clusters (mean probability of a cluster's images), the stricter over sources."""
    per_source: dict[str, dict[str, float]] = {}
    for source in sources:
        idx = scored.where(source)
        _, labels, probs = cluster_means(scored.clusters[idx], scored.labels[idx], probabilities[idx])
        per_source[source] = {
            "sensitive": sensitive_threshold(labels, probs, SENSITIVITY_TARGET),
            "specific": specific_threshold(labels, probs, SPECIFICITY_TARGET),
            "clusters": len(labels),
        }
    sensitive = min(v["sensitive"] for v in per_source.values())
    specific = max(v["specific"] for v in per_source.values())
    if specific < sensitive:  # the two rules cross: no doubt band is needed on val
        sensitive = specific = (sensitive + specific) / 2
    return {
        "sensitive": sensitive,
        "specific": specific,
        "fitted_on": "val",
        "level": "cluster (mean calibrated probability of a cluster's images)",
        "rule": (
            f"sensitive: the highest threshold with sensitivity >= {SENSITIVITY_TARGET} on every source; "
            f"specific: the lowest threshold with specificity >= {SPECIFICITY_TARGET} on every source"
        ),
        "per_source": per_source,
    }


def fit_bands(
    val: Logits, sources: Sequence[str], *, fitted_on: str = "val"
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Platt calibration on the val images of ``sources``, each distinct radiograph weighing the same
    (1 / cluster size), then both operating points on them.

    Returns (calibration, calibrated probabilities of every val image, operating points).
    """
    idx = np.flatnonzero(np.isin(val.sources, list(sources)))
    calibration = fit_platt(val.logits[idx], val.labels[idx], cluster_weights(val.clusters[idx]))
    calibration |= {"weights": "1 / cluster size", "fitted_on": fitted_on}
    probabilities = calibrate(val.logits, calibration)
    points = fit_operating_points(val, probabilities, sources) | {"fitted_on": fitted_on}
    return calibration, probabilities, points


def band_of(probabilities: np.ndarray, sensitive: float, specific: float) -> np.ndarray:
    """0 (no fracture), 1 (doubt) or 2 (fracture) per probability: ``BAND_NAMES``' order."""
    return np.where(probabilities >= specific, 2, np.where(probabilities >= sensitive, 1, 0))


def one_band_share(clusters: np.ndarray, bands: np.ndarray) -> tuple[float, int]:
    """The share of multi-image clusters whose images all fall in one band (NaN when there are none), and
    how many multi-image clusters there are."""
    _, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    same = np.ones(len(counts), bool)
    for k in range(len(BAND_NAMES)):
        in_band = np.bincount(inverse, weights=(bands == k).astype(float))
        same &= (in_band == 0) | (in_band == counts)
    multi = counts >= 2
    return (float(same[multi].mean()) if multi.any() else float("nan")), int(multi.sum())


# ---------------------------------------------------------------------------- what the bands mean on test


def level_report(
    labels: np.ndarray, probabilities: np.ndarray, clusters: np.ndarray, points: dict[str, Any], n_boot: int
) -> dict[str, Any]:
    """AUC, both operating points and the bands on one level (images or clusters), with intervals."""

    def interval(statistic: Any) -> dict[str, float]:
        return bootstrap_interval(statistic, clusters, labels, n_boot=n_boot)

    out: dict[str, Any] = {"n": len(labels), "positives": int(labels.sum())}
    out["auc"] = interval(lambda w: roc_auc(labels, probabilities, w))
    for name in ("sensitive", "specific"):
        predicted = probabilities >= points[name]
        tp = int(np.sum(predicted & (labels == 1)))
        fp = int(np.sum(predicted & (labels == 0)))
        tn = int(np.sum(~predicted & (labels == 0)))
        fn = int(np.sum(~predicted & (labels == 1)))
        out[name] = {
            "threshold": points[name],
            "sensitivity": interval(lambda w, p=predicted: weighted_rates(labels, p, w)[0]),
            "specificity": interval(lambda w, p=predicted: weighted_rates(labels, p, w)[1]),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "accuracy": (tp + tn) / len(labels),
            "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        }
    bands = band_of(probabilities, points["sensitive"], points["specific"])
    out["bands"] = {
        name: {
            "share": float(np.mean(bands == k)),
            "fractured": int(np.sum((bands == k) & (labels == 1))),
            "not_fractured": int(np.sum((bands == k) & (labels == 0))),
        }
        for k, name in enumerate(BAND_NAMES)
    }
    out["ece"] = expected_calibration_error(labels, probabilities)
    out["reliability"] = reliability_bins(labels, probabilities)
    return out


def source_report(
    scored: Logits, idx: np.ndarray, probabilities: np.ndarray, points: dict[str, Any], n_boot: int
) -> dict[str, Any]:
    """One source's test figures: per image and per cluster, one band per multi-image cluster, without
    hardware and per body region where the source records them."""
    labels, clusters, probs = scored.labels[idx], scored.clusters[idx], probabilities[idx]
    report: dict[str, Any] = {"images": level_report(labels, probs, clusters, points, n_boot)}
    ids, cl_labels, cl_probs = cluster_means(clusters, labels, probs)
    report["clusters"] = level_report(cl_labels, cl_probs, ids, points, n_boot)
    bands = band_of(probs, points["sensitive"], points["specific"])
    one_band, multi = one_band_share(clusters, bands)
    if multi:
        # Also the previous model's figure: one binary call (at the sensitive threshold) for every copy.
        one_call, _ = cluster_consistency(clusters, bands > 0)
        report["consistency"] = {
            "share_one_band": one_band,
            "share_one_call_at_sensitive": one_call,
            "multi_image_clusters": multi,
        }
    hardware = np.array([scored.records[i].hardware for i in idx])
    if hardware.any():
        keep = hardware == 0
        report["no_hardware"] = {
            "images": level_report(labels[keep], probs[keep], clusters[keep], points, n_boot),
        }
    regions = region_aucs([scored.records[i] for i in idx], labels, probs)
    if regions:
        report["regions"] = regions
    return report
