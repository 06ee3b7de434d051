"""Metrics that respect clusters: per image and per cluster, cluster-bootstrap intervals, calibration.

Images of one cluster (rotated, shifted, zoomed copies of one radiograph) are not independent, so every
interval here resamples whole clusters, and every figure also exists per cluster (the mean probability
of its images). numpy + scikit-learn only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # a type only: this module stays numpy + scikit-learn (classifier.data loads the decoders)
    from classifier.data import Record

# Cluster-bootstrap resamples behind every interval of the evaluation and release reports.
N_BOOT = 2000

__all__ = [
    "N_BOOT",
    "BinaryMetrics",
    "binary_metrics",
    "bootstrap_interval",
    "cluster_bootstrap",
    "cluster_consistency",
    "cluster_means",
    "expected_calibration_error",
    "fit_platt",
    "fit_temperature",
    "region_aucs",
    "reliability_bins",
    "roc_auc",
    "source_metrics",
    "threshold_for_sensitivity",
    "weighted_rates",
    "wilson_interval",
]


def roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC-AUC (ties count half); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    pos_w, neg_w = w[labels].sum(), w[~labels].sum()
    if pos_w <= 0 or neg_w <= 0:
        return float("nan")
    # Mann-Whitney, ties counting half: per distinct score, positives x (negatives below + half the tied).
    _, inverse = np.unique(scores, return_inverse=True)
    pos_g = np.bincount(inverse, weights=np.where(labels, w, 0.0))
    neg_g = np.bincount(inverse, weights=np.where(labels, 0.0, w))
    neg_below = np.cumsum(neg_g) - neg_g
    total = float(np.sum(pos_g * (neg_below + 0.5 * neg_g)))
    return float(total / (pos_w * neg_w))


@dataclass(frozen=True)
class BinaryMetrics:
    n: int
    positives: int
    auc: float
    accuracy: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> BinaryMetrics:
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    sensitivity = _safe_div(tp, tp + fn)
    precision = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return BinaryMetrics(
        n=len(labels),
        positives=int(labels.sum()),
        auc=roc_auc(labels, probabilities),
        accuracy=_safe_div(tp + tn, len(labels)),
        sensitivity=sensitivity,
        specificity=_safe_div(tn, tn + fp),
        precision=precision,
        f1=f1,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def cluster_means(
    clusters: Sequence[str] | np.ndarray, labels: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster: (cluster ids, label, mean value). A cluster's label is its images' majority label."""
    clusters = np.asarray(clusters)
    ids, inverse = np.unique(clusters, return_inverse=True)
    counts = np.bincount(inverse)
    means = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64)) / counts
    label_means = np.bincount(inverse, weights=np.asarray(labels, dtype=np.float64)) / counts
    return ids, (label_means >= 0.5).astype(np.int32), means


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[str] | np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(estimate, low, high) of ``statistic(weights)`` with whole clusters resampled with replacement.

    ``statistic`` receives per-image weights (how many times each image's cluster was drawn) and must
    compute its figure as a weighted one. Clusters are resampled within each label (stratified), so
    both classes are always present. Percentile interval.
    """
    clusters = np.asarray(clusters)
    ids, inverse = np.unique(clusters, return_inverse=True)
    _, cluster_labels, _ = cluster_means(clusters, labels, np.zeros(len(clusters)))
    rng = np.random.default_rng(seed)
    estimate = statistic(np.ones(len(clusters)))
    groups = [np.flatnonzero(cluster_labels == lab) for lab in (0, 1)]
    stats = []
    for _ in range(n_boot):
        draws = np.zeros(len(ids))
        for members in groups:
            if len(members):
                picked = rng.choice(members, size=len(members), replace=True)
                draws += np.bincount(picked, minlength=len(ids))
        value = statistic(draws[inverse])
        if math.isfinite(value):
            stats.append(value)
    if not stats:
        return estimate, float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(estimate), float(low), float(high)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[str] | np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, float]:
    """``cluster_bootstrap`` as the reports store it: ``{"value", "low", "high"}``."""
    estimate, low, high = cluster_bootstrap(statistic, clusters, labels, n_boot=n_boot, seed=seed)
    return {"value": estimate, "low": low, "high": high}


def weighted_rates(labels: np.ndarray, predicted: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(sensitivity, specificity) of boolean calls with per-image weights (NaN where a class weighs 0)."""
    pos, neg = labels == 1, labels == 0
    sens = float(np.sum(w[pos] * predicted[pos]) / np.sum(w[pos])) if np.sum(w[pos]) else float("nan")
    spec = float(np.sum(w[neg] * ~predicted[neg]) / np.sum(w[neg])) if np.sum(w[neg]) else float("nan")
    return sens, spec


def wilson_interval(k: int, n: int, z: float = 1.96) -> dict[str, float]:
    """Wilson 95 % interval for k of n, ``{"low", "high"}`` (NaN when n is 0)."""
    if n == 0:
        return {"low": float("nan"), "high": float("nan")}
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"low": float(centre - half), "high": float(centre + half)}


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, *, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of (share of samples) x |accuracy - confidence|."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(labels[members].mean() - probabilities[members].mean())
    return float(total)


def reliability_bins(
    labels: np.ndarray, probabilities: np.ndarray, *, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted probability, observed frequency, count) per non-empty equal-width bin."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        if members.any():
            out.append(
                (float(probabilities[members].mean()), float(labels[members].mean()), int(members.sum()))
            )
    return out


def _log_loss(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    # Numerically stable binary cross-entropy on logits.
    loss = np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))
    return float(np.sum(weights * loss) / np.sum(weights))


def fit_platt(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Platt scaling ``sigmoid(a * logit + b)`` by (weighted) maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(labels, dtype=np.int64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    model = LogisticRegression(C=1e6, max_iter=1000, tol=1e-10).fit(x, y, sample_weight=w)
    a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
    ww = np.ones(len(y)) if w is None else w
    return {"method": "platt", "a": a, "b": b, "log_loss": _log_loss(a * x[:, 0] + b, y.astype(float), ww)}


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """Temperature scaling ``sigmoid(logit / T)``: one parameter, by a grid + golden-section search."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 200))
    losses = [_log_loss(x / t, y, w) for t in grid]
    best = int(np.argmin(losses))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _log_loss(x / m1, y, w) < _log_loss(x / m2, y, w):
            hi = m2
        else:
            lo = m1
    t = (lo + hi) / 2
    return {"method": "temperature", "a": float(1.0 / t), "b": 0.0, "temperature": float(t)}


def threshold_for_sensitivity(labels: np.ndarray, probabilities: np.ndarray, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity (predicted >= threshold) reaches ``target``."""
    labels = np.asarray(labels).astype(bool)
    positives = np.sort(np.asarray(probabilities, dtype=np.float64)[labels])[::-1]
    if len(positives) == 0:
        raise ValueError("no positive samples to set a sensitivity threshold")
    needed = math.ceil(target * len(positives) - 1e-9)
    needed = min(max(needed, 1), len(positives))
    return float(positives[needed - 1])


def cluster_consistency(
    clusters: Sequence[str] | np.ndarray, predicted: np.ndarray, *, min_size: int = 2
) -> tuple[float, int]:
    """Share of clusters with at least ``min_size`` images whose images all get the same verdict."""
    clusters = np.asarray(clusters)
    predicted = np.asarray(predicted).astype(bool)
    _, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    positives = np.bincount(inverse, weights=predicted.astype(np.float64))
    multi = counts >= min_size
    if not multi.any():
        return float("nan"), 0
    same = (positives[multi] == 0) | (positives[multi] == counts[multi])
    return float(same.mean()), int(multi.sum())


def region_aucs(
    records: Sequence[Record], labels: np.ndarray, probabilities: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per body region (a record may name several, ``|``-separated): images, fractured images and ROC-AUC
    (NaN where the region has one class only). Empty when no record names a region."""
    regions = sorted({part for r in records for part in r.region.split("|") if part})
    out: dict[str, dict[str, Any]] = {}
    for region in regions:
        m = np.array([region in r.region.split("|") for r in records])
        fractured = int(labels[m].sum())
        out[region] = {
            "images": int(m.sum()),
            "fractured": fractured,
            "auc": roc_auc(labels[m], probabilities[m]) if 0 < fractured < m.sum() else float("nan"),
        }
    return out


def source_metrics(
    records: Sequence[Record], logits: np.ndarray, *, threshold_logit: float = 0.0
) -> dict[str, float]:
    """Per-source validation AUCs (per image and per cluster), FracAtlas without hardware, consistency.

    ``score`` is the mean of the available AUCs: the figure recipes, epochs and test-time augmentations
    are chosen on (``classifier.train``, ``classifier.train_detector``, ``classifier.release``).
    """
    labels = np.array([r.label for r in records])
    sources = np.array([r.source for r in records])
    clusters = np.array([r.cluster for r in records])
    hardware = np.array([r.hardware for r in records])
    probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    out: dict[str, float] = {}
    parts = []
    for source in sorted(set(sources)):
        m = sources == source
        image_auc = roc_auc(labels[m], probabilities[m])
        _, cluster_labels, cluster_probs = cluster_means(clusters[m], labels[m], probabilities[m])
        cluster_auc = roc_auc(cluster_labels, cluster_probs)
        out[f"{source}_auc"] = image_auc
        parts.append(image_auc)
        if len(cluster_labels) < m.sum():
            out[f"{source}_cluster_auc"] = cluster_auc
            consistency, _ = cluster_consistency(clusters[m], np.asarray(logits)[m] >= threshold_logit)
            out[f"{source}_consistency"] = consistency
            if len(cluster_labels) < 0.9 * m.sum():  # only where clusters group many images
                parts.append(cluster_auc)
        if hardware[m].any():
            nh = m & (hardware == 0)
            out[f"{source}_auc_no_hardware"] = roc_auc(labels[nh], probabilities[nh])
            parts.append(out[f"{source}_auc_no_hardware"])
    finite = [p for p in parts if np.isfinite(p)]
    out["score"] = float(np.mean(finite)) if finite else float("nan")
    return out
