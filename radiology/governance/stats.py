"""Statistics for the governance pages: paired bootstrap of an AUC difference, operating-point
proportions, calibration bins and the population stability index. numpy only, no Django."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classifier.metrics import wilson_interval

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float] | None:
    """Wilson 95 % interval for k of n as (low, high), None when n is 0 (classifier.metrics' formula)."""
    if n <= 0:
        return None
    interval = wilson_interval(k, n, z=Z95)
    return max(0.0, interval["low"]), min(1.0, interval["high"])


def _weighted_auc(pos_rank_weights: np.ndarray, neg_rank_weights: np.ndarray) -> float:
    """AUC from per-distinct-score weights of positives and negatives (ties count half)."""
    pos_total, neg_total = pos_rank_weights.sum(), neg_rank_weights.sum()
    if pos_total <= 0 or neg_total <= 0:
        return float("nan")
    neg_below = np.cumsum(neg_rank_weights) - neg_rank_weights
    return float(np.sum(pos_rank_weights * (neg_below + 0.5 * neg_rank_weights)) / (pos_total * neg_total))


class _AucByWeights:
    """AUC of one score under any weighting of the cases: the ranks are computed once."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        _, self.inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        self.size = int(self.inverse.max()) + 1 if len(self.inverse) else 0
        self.positive = np.asarray(labels).astype(bool)

    def __call__(self, weights: np.ndarray) -> float:
        pos = np.bincount(self.inverse, weights=np.where(self.positive, weights, 0.0), minlength=self.size)
        neg = np.bincount(self.inverse, weights=np.where(self.positive, 0.0, weights), minlength=self.size)
        return _weighted_auc(pos, neg)


@dataclass(frozen=True)
class PairedAuc:
    n: int
    positives: int
    clusters: int
    auc_a: float
    auc_b: float
    difference: float  # b - a
    low: float  # 95 % percentile interval of b - a
    high: float
    replicates: int


def paired_auc_difference(
    labels: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    *,
    replicates: int = 1000,
    seed: int = 0,
) -> PairedAuc:
    """AUC(b) - AUC(a) on the same cases with a 95 % interval from a paired bootstrap over clusters
    (studies): each replicate draws studies with replacement and scores both versions on the same draw,
    so the interval reflects the pairing (both versions read the same radiographs)."""
    y = np.asarray(labels).astype(bool)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if not (len(y) == len(a) == len(b) == len(clusters)):
        raise ValueError("labels, scores and clusters must have the same length")
    _, cluster_index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_clusters = int(cluster_index.max()) + 1 if len(cluster_index) else 0
    auc_a, auc_b = _AucByWeights(y, a), _AucByWeights(y, b)
    ones = np.ones(len(y))
    point_a, point_b = auc_a(ones), auc_b(ones)
    if not len(y) or math.isnan(point_a) or math.isnan(point_b):
        nan = float("nan")
        return PairedAuc(len(y), int(y.sum()), n_clusters, point_a, point_b, nan, nan, nan, 0)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(replicates):
        # How many times each study is drawn; each radiograph weighs as much as its study.
        counts = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)
        weights = counts[cluster_index].astype(np.float64)
        difference = auc_b(weights) - auc_a(weights)
        if not math.isnan(difference):
            differences.append(difference)
    low, high = np.percentile(differences, [2.5, 97.5]) if differences else (float("nan"),) * 2
    return PairedAuc(
        len(y),
        int(y.sum()),
        n_clusters,
        point_a,
        point_b,
        point_b - point_a,
        float(low),
        float(high),
        len(differences),
    )


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    mean_probability: float | None
    observed: float | None
    interval: tuple[float, float] | None


def reliability(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, *, bins: int = 10
) -> list[ReliabilityBin]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    positives = np.bincount(index, weights=y, minlength=bins)
    return reliability_from_sums(counts, sum_p, positives)


def reliability_from_sums(
    counts: Sequence[float] | np.ndarray,
    sum_p: Sequence[float] | np.ndarray,
    positives: Sequence[float] | np.ndarray,
) -> list[ReliabilityBin]:
    bins = len(counts)
    out = []
    for i in range(bins):
        n = int(counts[i])
        k = round(float(positives[i]))
        out.append(
            ReliabilityBin(
                i / bins,
                (i + 1) / bins,
                n,
                float(sum_p[i]) / n if n else None,
                k / n if n else None,
                wilson(k, n),
            )
        )
    return out


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    total = sum(b.n for b in bins)
    if not total:
        return None
    return sum(b.n / total * abs((b.mean_probability or 0.0) - (b.observed or 0.0)) for b in bins if b.n)


PSI_FLOOR = 1e-4  # an empty bin on either side would make the index infinite


def population_stability_index(
    reference_fractions: Sequence[float] | np.ndarray, observed_counts: Sequence[float] | np.ndarray
) -> float:
    """PSI = sum (o - r) ln(o / r) over bins; < 0.1 stable, 0.1-0.25 some shift, > 0.25 a real shift."""
    r = np.asarray(reference_fractions, dtype=np.float64)
    o = np.asarray(observed_counts, dtype=np.float64)
    if r.shape != o.shape or r.ndim != 1 or not len(r):
        raise ValueError("reference and observed histograms must have the same bins")
    if o.sum() <= 0:
        raise ValueError("no observations")
    r = np.maximum(r / r.sum(), PSI_FLOOR)
    o = np.maximum(o / o.sum(), PSI_FLOOR)
    return float(np.sum((o - r) * np.log(o / r)))


def histogram_counts(values: Sequence[float] | np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin of ``edges`` (last bin closed; values outside go to the end bins)."""
    e = np.asarray(edges, dtype=np.float64)
    v = np.clip(np.asarray(values, dtype=np.float64), e[0], e[-1])
    index = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    return np.bincount(index, minlength=len(e) - 1).astype(np.float64)
