"""The classifier's figures: training curves, ROC, reliability, FROC and example grids (PNG files).

One module for training (``curves.png``), evaluation and release, so that a figure of the same kind looks
the same wherever it is drawn. matplotlib (and scikit-learn's ROC curve) load on first use only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.cells import BoxRule, cell_peak
from classifier.data import ImageSet, Record
from classifier.decoding import decode_grayscale
from classifier.explain import cam_to_heatmap, overlay, peak, pointing_hit
from classifier.localisation import FP_PER_IMAGE_TARGET, truths_of
from classifier.metrics import expected_calibration_error, reliability_bins, roc_auc
from classifier.scoring import Scored

Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (no display on servers and in tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay the figure out, write it as a PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss and validation AUCs per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in [k for k in ("loss", "image_loss", "cell_loss") if k in history[0]]:
        ax_loss.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="training loss (weighted BCE)", title="loss")
    ax_loss.legend(fontsize=7)
    keys = [k for k in history[0] if k.endswith(("auc", "no_hardware", "pointing")) or k == "score"]
    for key in keys:
        ax_auc.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax_auc.set(xlabel="epoch", ylabel="validation ROC-AUC", title="validation")
    if keys:
        ax_auc.legend(fontsize=7)
    else:  # a final fit trained on val too: say so rather than leave an empty panel
        ax_auc.text(0.5, 0.5, "no validation split:\ntrained on train + val,\nlast epoch kept", ha="center",
                    va="center", transform=ax_auc.transAxes)  # fmt: skip
    fig.suptitle(title)
    save_figure(fig, path)


def plot_roc(curves: Curves, path: Path, title: str) -> None:
    """One ROC curve per (labels, scores) pair that has both classes, with its AUC."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def plot_reliability(curves: Curves, path: Path, title: str) -> None:
    """Observed share fractured against predicted probability per bin (bin sizes marked), with the ECE."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for name, (labels, probabilities) in curves.items():
        bins = reliability_bins(labels, probabilities)
        ece = expected_calibration_error(labels, probabilities)
        xs, ys, ns = zip(*bins, strict=True) if bins else ((), (), ())
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece:.3f})")
        for x, y, n in zip(xs, ys, ns, strict=True):
            ax.annotate(str(n), (x, y), fontsize=6, alpha=0.6)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


def plot_froc(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Fractures found against false-positive boxes per image, one curve per test set."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, curve in curves.items():
        ax.plot([c["fp_per_image"] for c in curve], [c["sensitivity"] for c in curve], marker=".", label=name)
    ax.axvline(FP_PER_IMAGE_TARGET, color="grey", lw=0.8, ls=":")
    ax.set(
        xlabel="false-positive boxes per image", ylabel="fractures found", title="FROC on test", xlim=(0, 3)
    )
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_learning_curve(curve: dict[str, Any], path: Path, title: str) -> None:
    """Held-out AUC against the share of a source's training clusters kept (log scale), a line per fold,
    with the cluster-bootstrap intervals as error bars (``classifier.experiments.learning_curve``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    folds = sorted({p["fold"] for p in curve["points"]})
    for k, fold in enumerate(folds):
        mine = sorted((p for p in curve["points"] if p["fold"] == fold), key=lambda p: p["share"])
        nudge = 2 ** (0.03 * (k - (len(folds) - 1) / 2))  # side by side, so the error bars do not hide
        shares = [p["share"] * nudge for p in mine]
        values = np.array([p["auc"]["value"] for p in mine])
        below = values - np.array([p["auc"]["low"] for p in mine])
        above = np.array([p["auc"]["high"] for p in mine]) - values
        ax.errorbar(shares, values, yerr=[below, above], marker="o", capsize=3, label=f"fold {fold + 1}")
    shares = sorted({p["share"] for p in curve["points"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(shares, [f"{s:g}" for s in shares])
    ax.set(xlabel=f"share of {curve['source']} training clusters kept (log scale)",
           ylabel=f"{curve['source']} held-out ROC-AUC ({curve['mode']})", title=title)  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def plot_box_examples(scored: Scored, idx: Sequence[int], rule: BoxRule, path: Path, title: str) -> None:
    """A grid of test radiographs: true boxes green, the model's boxes red (score), peak cell marked."""
    plt = pyplot()
    idx = list(idx)[:12]
    cols = 4
    rows = max(1, int(np.ceil(len(idx) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), idx, strict=False):
        record = scored.records[i]
        gray = decode_grayscale(record.path.read_bytes())
        ax.imshow(gray, cmap="gray")
        for x0, y0, x1, y1 in truths_of(scored, [i])[0]:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.2))
        for box in rule.boxes(scored.cells[i], scored.data.geometries[i]):
            ax.add_patch(
                plt.Rectangle(
                    (box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, fill=False, color="red", lw=1.2
                )
            )
            ax.text(box.x0, box.y0, f"{box.score:.2f}", color="red", fontsize=6, va="bottom")
        x, y = cell_peak(scored.cells[i], scored.data.geometries[i])
        ax.plot([x], [y], marker="+", color="yellow", ms=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=90)


def plot_pointing_examples(
    records: Sequence[Record], data: ImageSet, cams: Sequence[np.ndarray], path: Path, *, count: int = 12
) -> None:
    """Fractured images with boxes: the heatmap over the radiograph, true boxes green, the peak marked."""
    plt = pyplot()
    chosen = [i for i, r in enumerate(records) if r.label == 1 and r.boxes][:count]
    if not chosen:
        return
    cols = 6
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.8 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), chosen, strict=False):
        gray = decode_grayscale(records[i].path.read_bytes())
        heatmap = cam_to_heatmap(cams[i], data.geometries[i])
        ax.imshow(overlay(gray, heatmap, opacity=0.55))
        h, w = gray.shape
        for cx, cy, bw, bh in records[i].boxes:
            ax.add_patch(
                plt.Rectangle(
                    ((cx - bw / 2) * w, (cy - bh / 2) * h), bw * w, bh * h, fill=False, color="lime", lw=1
                )
            )
        px, py = peak(heatmap)
        hit = pointing_hit(heatmap, records[i].boxes)
        ax.plot(px * w, py * h, marker="x", color="white" if hit else "red", ms=8, mew=2)
        ax.set_title(f"{records[i].path.stem} {'hit' if hit else 'miss'}", fontsize=7)
    save_figure(fig, path, dpi=100)
