"""Does the cell head's maximum rank radiographs better beside the image logit? Cross-validated, from a run.

    .venv/bin/python models/experiments/cell_max_ranking.py [--run models/experiments/runs/s384-rerun]

No training (rule and result in notes.md, "The cell head's maximum beside the image logit"). On a run's
held-out Kaggle and FracAtlas radiographs (``oof-fold*.csv``, which keep ``logit_flip`` and ``cell_max``),
the score (1 - a) * z(image logit) + a * z(cell_max), each standardised on all held-out images (no label
read), with ``a`` chosen by an inner grouped 4-fold cross-validation on the mean of the FracAtlas and Kaggle
per-image AUCs, is scored out of fold by an outer grouped 5-fold cross-validation over clusters, for three
shuffles of the clusters; the paired difference against the image logit alone has a cluster-bootstrap
interval. Then ``a`` chosen on the whole held-out part is applied to the fold model's test logits
(``test-fold*.csv``), read after, never chosen on.
Prints the figures; seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifier.metrics import cluster_bootstrap, roc_auc
from classifier.scoring import read_predictions

WEIGHTS = (0.0, 0.25, 0.5, 0.75)
SOURCES = ("fracatlas", "kaggle")


class Held:
    """The rows of one or more prediction files, as arrays."""

    def __init__(self, rows: Sequence[dict[str, str]]) -> None:
        rows = [r for r in rows if r["source"] in SOURCES]
        self.source = np.array([r["source"] for r in rows])
        self.cluster = np.array([r["cluster"] for r in rows])
        self.label = np.array([int(r["label"]) for r in rows])
        self.logit = np.array([float(r["logit_flip"]) for r in rows])
        self.cell = np.array([float(r["cell_max"]) for r in rows])


def standardise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (values - reference.mean()) / (reference.std() + 1e-9)


def combined(held: Held, a: float) -> np.ndarray:
    # Standardised on every held-out image (no label is read), so that a = 0 ranks exactly as the image logit
    # and the folds' scores pool on one scale; only the weight is fitted, on the labels of the fitting part.
    return (1 - a) * standardise(held.logit, held.logit) + a * standardise(held.cell, held.cell)


def score(held: Held, scores: np.ndarray, where: np.ndarray) -> float:
    """The mean of the FracAtlas and Kaggle per-image AUCs on ``where``."""
    parts = [where & (held.source == source) for source in SOURCES]
    return float(np.mean([roc_auc(held.label[part], scores[part]) for part in parts]))


def grouped_folds(clusters: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    ids = np.unique(clusters)
    fold_of = dict(zip(rng.permutation(ids), np.arange(len(ids)) % k, strict=True))
    return np.array([fold_of[c] for c in clusters])


def choose(held: Held, fit: np.ndarray, rng: np.random.Generator) -> float:
    """The weight with the best inner cross-validated score on ``fit`` (ties: the smaller weight)."""
    inner = grouped_folds(held.cluster, 4, rng)
    results = []
    for a in WEIGHTS:
        values = []
        for k in range(4):
            part_test = fit & (inner == k)
            values.append(score(held, combined(held, a), part_test))
        results.append(np.mean(values))
    return WEIGHTS[int(np.argmax(results))]


def out_of_fold(held: Held, shuffle: int) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(shuffle)
    outer = grouped_folds(held.cluster, 5, rng)
    scores = np.zeros(len(held.label))
    chosen = []
    for k in range(5):
        fit, test = outer != k, outer == k
        a = choose(held, fit, rng)
        chosen.append(a)
        scores[test] = combined(held, a)[test]
    return scores, chosen


def paired(held: Held, scores: np.ndarray, source: str) -> tuple[float, float, float]:
    mine = held.source == source
    labels, a, b = held.label[mine], scores[mine], held.logit[mine]
    return cluster_bootstrap(
        lambda w: roc_auc(labels, a, w) - roc_auc(labels, b, w), held.cluster[mine], labels, n_boot=1000
    )


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("models/experiments/runs/s384-rerun"))
    args = p.parse_args(argv)
    held = Held([row for f in sorted(args.run.glob("oof-fold*.csv")) for row in read_predictions(f)])
    everything = np.ones(len(held.label), bool)
    for source in SOURCES:
        mine = held.source == source
        out(
            f"{source}: {mine.sum()} held-out images; image logit AUC "
            f"{roc_auc(held.label[mine], held.logit[mine]):.3f}, cell_max AUC "
            f"{roc_auc(held.label[mine], held.cell[mine]):.3f}"
        )
    gains = []
    for shuffle in range(3):
        scores, chosen = out_of_fold(held, shuffle)
        figures = {s: paired(held, scores, s) for s in SOURCES}
        gains.append(figures["fracatlas"][0])
        out(
            f"shuffle {shuffle}: weights chosen {chosen}; out-of-fold difference against the image logit: "
            + "; ".join(f"{s} {v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for s, (v, lo, hi) in figures.items())
        )
    out(f"FracAtlas gain, mean of the three shuffles: {np.mean(gains):+.3f}")

    a = choose(held, everything, np.random.default_rng(0))
    tests = sorted(args.run.glob("test-fold*.csv"))
    if tests:
        test = Held([row for f in tests for row in read_predictions(f)])
        # Standardised with the held-out part's mean and spread, as a serving change would be fitted.
        test_scores = (1 - a) * standardise(test.logit, held.logit) + a * standardise(test.cell, held.cell)
        for source in SOURCES:
            mine = test.source == source
            out(
                f"test (read after; a = {a} chosen on the whole held-out part): {source} AUC "
                f"{roc_auc(test.label[mine], test_scores[mine]):.3f} against the image logit's "
                f"{roc_auc(test.label[mine], test.logit[mine]):.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
