"""How the final fit on train + val (lite0-det-v2.4) compares with the same recipe trained on train only
(lite0-det-v2.3), image by image on the same test radiographs.

    .venv/bin/python models/experiments/final_fit_test.py [--new DIR] [--old DIR]

No inference: both releases' ``predictions-test.csv``. Per source, each model's ROC-AUC and the paired
difference (new - old) with a 95 % cluster-bootstrap interval (whole clusters resampled within each label,
the same draws for both models); Kaggle also per cluster (the mean logit of its images, each cluster drawn as
one). Read after the release, for the notes; the decision to ship the final fit was made before its run
(notes.md, "A final fit on train + val").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from classifier.metrics import N_BOOT, cluster_bootstrap, cluster_means, roc_auc
from classifier.scoring import read_predictions


def paired(
    labels: np.ndarray, new: np.ndarray, old: np.ndarray, clusters: np.ndarray, n_boot: int
) -> tuple[float, float, float, float, float]:
    """(AUC new, AUC old, difference, low, high) with the same cluster resamples for both."""

    def difference(w: np.ndarray) -> float:
        return roc_auc(labels, new, w) - roc_auc(labels, old, w)

    value, low, high = cluster_bootstrap(difference, clusters, labels, n_boot=n_boot)
    return roc_auc(labels, new), roc_auc(labels, old), value, low, high


def table(new_dir: Path, old_dir: Path, n_boot: int = N_BOOT) -> list[str]:
    new_rows = {r["path"]: r for r in read_predictions(new_dir / "predictions-test.csv")}
    old_rows = {r["path"]: r for r in read_predictions(old_dir / "predictions-test.csv")}
    paths = sorted(set(new_rows) & set(old_rows))
    lines = [
        f"| test, paired | `{new_dir.name}` | `{old_dir.name}` | difference [95 % interval] |",
        "|---|---|---|---|",
    ]
    for name, source, keep in (
        ("FracAtlas", "fracatlas", lambda r: True),
        ("FracAtlas without hardware", "fracatlas", lambda r: float(r["hardware"]) == 0),
        ("Kaggle per image", "kaggle", lambda r: True),
    ):
        rows = [new_rows[p] for p in paths if new_rows[p]["source"] == source and keep(new_rows[p])]
        labels = np.array([int(float(r["label"])) for r in rows])
        new = np.array([float(r["logit"]) for r in rows])
        old = np.array([float(old_rows[r["path"]]["logit"]) for r in rows])
        clusters = np.array([r["cluster"] for r in rows])
        a, b, d, lo, hi = paired(labels, new, old, clusters, n_boot)
        lines.append(f"| {name} ({len(rows)} images) | {a:.3f} | {b:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        if source == "kaggle":
            ids, cluster_labels, new_means = cluster_means(clusters, labels, new)
            _, _, old_means = cluster_means(clusters, labels, old)
            a, b, d, lo, hi = paired(cluster_labels, new_means, old_means, ids, n_boot)
            name = f"Kaggle per cluster ({len(ids)} clusters)"
            lines.append(f"| {name} | {a:.3f} | {b:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new", type=Path, default=Path("models/lite0-det-v2.4"))
    p.add_argument("--old", type=Path, default=Path("models/lite0-det-v2.3"))
    p.add_argument("--n-boot", type=int, default=N_BOOT)
    args = p.parse_args(argv)
    sys.stdout.write("\n".join(table(args.new, args.old, args.n_boot)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
