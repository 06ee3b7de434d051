"""Train the v2 model (image head + fracture-cell head): the ``--arch lite0det`` path of classifier.train.

    D=../shared/datasets
    python -m classifier.train --data $D/bone-fracture-xray --data $D/fracatlas \
        --data $D/bone-fracture-boxes --arch lite0det --size 320 --epochs 5 --augment strong \
        --out classifier_runs/lite0-det-v2

Trains on every source's ``train``; the image loss uses only the sources with both classes, the cell loss
every image with boxes and every normal radiograph. After each epoch it scores ``val``: the image AUCs per
source (the figure the epoch is chosen on) and the pointing game of the cell head on val images with boxes.
Writes ``model.keras`` (serving graph with flip TTA), ``card.json`` (no calibration yet: that and the
operating points are fitted by ``classifier.release``), ``val_predictions.csv``, ``val_cells.npz`` and
``history.json``.

    python -m classifier.train ... --arch lite0det --cv 3 --out classifier_runs/cv-lite0-det-v2

cross-validates the same recipe instead: whole clusters per fold over train + val of every source
(``grouped_folds``), each fold trained for the recipe's epochs with no selection on its held-out part, which
it then scores. ``oof-fold{k}.csv`` holds each held-out image's logit under every test-time augmentation
mode the release may choose (one forward pass per distinct view; a mode's logit is the mean of its views',
as in the serving graph). ``classifier.release --oof`` fits calibration, the operating points and the TTA on
these out-of-fold logits: about five times as many clusters as val alone.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
from classifier.cells import cell_peak, fraction_boxes_to_pixels, pointing_hits
from classifier.data import ImageSet, Record, describe, fingerprint, load_images, select
from classifier.detector import (
    DetectorFit,
    detector_data,
    detector_description,
    detector_serving_model,
    fit_detector,
    predict_detector,
)
from classifier.figures import plot_curves
from classifier.metrics import source_metrics
from classifier.pipeline import grouped_folds
from classifier.preprocessing import InputSpec
from classifier.scoring import write_predictions

log = logging.getLogger("classifier.train")


def image_sources(records: list[Record]) -> list[str]:
    """The sources with both classes: only they may teach the image head (see detector_data)."""
    labels: dict[str, set[int]] = {}
    for r in records:
        labels.setdefault(r.source, set()).add(r.label)
    return sorted(s for s, seen in labels.items() if seen == {0, 1})


def localisation_score(data: ImageSet, cells: np.ndarray) -> dict[str, float]:
    """Pointing game of the cell head per source, on the images that have boxes."""
    out: dict[str, float] = {}
    for source in sorted({r.source for r in data.records}):
        idx = [i for i, r in enumerate(data.records) if r.source == source and r.label == 1 and r.boxes]
        if not idx:
            continue
        peaks = [cell_peak(cells[i], data.geometries[i]) for i in idx]
        truths = [
            fraction_boxes_to_pixels(
                data.records[i].boxes, data.geometries[i].original_width, data.geometries[i].original_height
            )
            for i in idx
        ]
        out[f"{source}_pointing"] = float(pointing_hits(peaks, truths).mean())
    return out


def view_logits(
    core: Any, images: np.ndarray, modes: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each TTA mode's image logits (the mean of its views' logits, each distinct view run once), and the
    cell maps of the plain view.

    Equal to the serving graph's logit for that mode: the image logit is the mean of the logit map, and
    TTAMerge maps each view's map back (a permutation) before averaging them.
    """
    from classifier.layers import TTA_VIEWS, apply_view

    per_view: dict[tuple[str, ...], np.ndarray] = {}
    plain_cells = np.zeros((0, 1, 1), np.float32)
    for view in dict.fromkeys([(), *(v for mode in modes for v in TTA_VIEWS[mode])]):
        turned = np.asarray(apply_view(images[..., None], view))[..., 0]
        per_view[view], cells = predict_detector(core, turned)
        if view == ():
            plain_cells = cells
    logits = {mode: np.mean([per_view[v] for v in TTA_VIEWS[mode]], axis=0) for mode in modes}
    return logits, plain_cells


def highest_cell(cells: np.ndarray) -> np.ndarray:
    """Each image's highest fracture-cell logit (plain view): kept beside the image logits so that a ranking
    that reads the cell head too can be cross-validated from the kept files, without retraining."""
    return cells.reshape(len(cells), -1).max(axis=1) if len(cells) else np.zeros(0, np.float32)


def fold_figures(
    data: ImageSet, classified: Sequence[str], logits: dict[str, np.ndarray], cells: np.ndarray
) -> dict[str, Any]:
    """A fold model's figures on one image set: per TTA mode the AUCs of source_metrics (on the sources
    with both classes), and the cell head's pointing game on the images with boxes."""
    scored = _in(data, classified)
    records = [r for r, s in zip(data.records, scored, strict=True) if s]
    figures: dict[str, Any] = {mode: source_metrics(records, v[scored]) for mode, v in logits.items()}
    figures["localisation"] = localisation_score(data, cells)
    return figures


def run_detector_cv(
    args: argparse.Namespace, recipe: Any, records: list[Record], spec: InputSpec, backbone: Path | None
) -> int:
    """Grouped CV of the lite0det recipe over train + val; out-of-fold logits per TTA mode, per fold file."""
    pool = load_images(select(records, splits=["train", "val"]), spec, cache_dir=args.cache_dir)
    classified = image_sources(records)
    folds = grouped_folds(pool.records, args.cv, seed=args.fold_seed, max_held_cluster=args.max_held_cluster)
    test = None
    if args.cv_test:
        test = load_images(select(records, splits=["test"]), spec, cache_dir=args.cache_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "cv_summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    # Fold k trains with seed + k; the split is fold_seed's, so reruns with other seeds pair image by image.
    summary |= {"recipe": recipe.to_dict(), "folds": args.cv, "seed": args.seed, "fold_seed": args.fold_seed}
    shares = args.cv_train_share
    if shares:
        summary["train_share"] = shares
    summary.setdefault("seconds_per_fold", {})
    for k in args.folds if args.folds is not None else range(args.cv):
        train_idx, held_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        steps = max(1, len(train_idx) // recipe.batch_size)  # the full fold's, whatever share trains
        train_idx = keep_share_of_clusters(pool.records, train_idx, shares, seed=args.fold_seed * 1000 + k)
        log.info("fold %d/%d: %d training, %d held-out images", k + 1, args.cv, len(train_idx), len(held_idx))
        result = fit_recipe(
            recipe,
            pool.subset(train_idx),
            classified,
            backbone,
            seed=args.seed + k,
            select_best=False,  # the recipe's last epoch: nothing is chosen on the held-out part
            max_steps=args.max_steps,
            steps_per_epoch=steps,
        )
        held = pool.subset(held_idx)
        logits, cells = view_logits(result.core, held.images, args.cv_tta)
        write_predictions(
            args.out / f"oof-fold{k}.csv",
            held.records,
            {f"logit_{mode}": v for mode, v in logits.items()}
            | {"cell_max": highest_cell(cells), "fold": np.full(len(held_idx), k)},
        )
        summary["seconds_per_fold"][str(k)] = round(result.seconds, 1)
        if shares:  # what a learning-curve point trained on, and for how long
            summary.setdefault("train_images", {})[str(k)] = len(train_idx)
            summary.setdefault("steps_per_epoch", {})[str(k)] = result.steps_per_epoch
        summary[f"fold{k}"] = fold_figures(held, classified, logits, cells)
        if test is not None:
            # Read after the fold, reported beside its cross-validated figures, never chosen on.
            test_logits, test_cells = view_logits(result.core, test.images, args.cv_tta)
            write_predictions(
                args.out / f"test-fold{k}.csv",
                test.records,
                {f"logit_{mode}": v for mode, v in test_logits.items()}
                | {"cell_max": highest_cell(test_cells)},
            )
            summary[f"fold{k}_test"] = fold_figures(test, classified, test_logits, test_cells)
        summary_path.write_text(json.dumps(summary, indent=2))
        log.info("fold %d done in %.0f s: %s", k + 1, result.seconds, summary[f"fold{k}"])
    return 0


def keep_share_of_clusters(
    records: Sequence[Record], indices: np.ndarray, shares: dict[str, float], *, seed: int
) -> np.ndarray:
    """``indices`` less a random (1 - share) of each named source's clusters among them: whole clusters go,
    so no near-copy of a dropped radiograph stays behind to train on. A share of 0 drops the source from
    training altogether (what it adds to the others); any other share keeps at least one cluster."""
    if not shares:
        return indices
    rng = np.random.default_rng(seed)
    dropped: set[tuple[str, str]] = set()
    for source, share in sorted(shares.items()):
        clusters = sorted({records[i].cluster for i in indices if records[i].source == source})
        if not clusters:
            raise ValueError(f"no training clusters of source {source!r} to keep a share of")
        keep = max(1, round(share * len(clusters))) if share > 0 else 0
        dropped |= {(source, c) for c in rng.permutation(clusters)[keep:]}
    return np.array([i for i in indices if (records[i].source, records[i].cluster) not in dropped], int)


def fit_recipe(
    recipe: Any, train: ImageSet, classified: Sequence[str], backbone: Path | None, **options: Any
) -> DetectorFit:
    """Train the recipe's detector on ``train`` (the image loss on the ``classified`` sources only)."""
    return fit_detector(
        detector_data(
            train,
            image_sources=list(classified),
            balance_sources=recipe.balance_sources,
            cluster_power=recipe.cluster_power,
            cell_target=recipe.cell_target,
        ),
        size=recipe.size,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup=recipe.warmup,
        augment=recipe.augment,
        cell_loss_weight=recipe.cell_loss_weight,
        consistency_weight=recipe.consistency_weight,
        ema_momentum=recipe.ema_momentum,
        dropout=recipe.dropout,
        drop_connect=recipe.drop_connect,
        bn_momentum=recipe.bn_momentum,
        label_smoothing=recipe.label_smoothing,
        backbone=recipe.backbone,
        cell_stride=recipe.cell_stride,
        boxed_negative_weight=recipe.boxed_negative_weight,
        backbone_weights=str(backbone) if backbone else None,
        **options,
    )


def _in(data: ImageSet, sources: Sequence[str]) -> np.ndarray:
    return np.array([r.source in sources for r in data.records], bool)


def epoch_scorer(val: ImageSet, classified: Sequence[str]) -> Callable[[Any], dict[str, Any]]:
    """What an epoch is rated on: the image AUCs on val's classified sources, and the cell head's pointing."""
    scored = _in(val, classified)
    records = [r for r, k in zip(val.records, scored, strict=True) if k]

    def evaluate_epoch(core: Any) -> dict[str, Any]:
        logits, cells = predict_detector(core, val.images)
        row: dict[str, Any] = source_metrics(records, logits[scored])
        row.update(localisation_score(val, cells))
        return row

    return evaluate_epoch


def run_detector(
    args: argparse.Namespace, recipe: Any, records: list[Record], spec: InputSpec, backbone: Path | None
) -> int:
    from classifier.models import count_params  # loads Keras: only when training

    if args.cv:
        return run_detector_cv(args, recipe, records, spec, backbone)

    # A final fit (--train-on-val) trains on val as well: nothing is left to score between epochs, so the
    # last epoch is kept, as every cross-validation fold keeps it.
    final_fit = args.train_on_val
    train_records = select(records, splits=["train", "val"] if final_fit else ["train"])
    val_records = [] if final_fit else select(records, splits=["val"])
    classified = image_sources(records)
    log.info(
        "training on %d images (image loss: %s), validating on %d",
        len(train_records),
        ", ".join(classified),
        len(val_records),
    )
    train = load_images(train_records, spec, cache_dir=args.cache_dir)
    val = load_images(val_records, spec, cache_dir=args.cache_dir) if val_records else None

    def checkpoint(epoch: int, core: Any, row: dict[str, Any]) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        core.save_weights(args.out / f"epoch{epoch}.weights.h5")
        (args.out / "history.partial.json").write_text(json.dumps(row, indent=2))

    result = fit_recipe(
        recipe,
        train,
        classified,
        backbone,
        seed=args.seed,
        evaluate_epoch=epoch_scorer(val, classified) if val is not None else None,
        select_best=not args.last_epoch,
        max_steps=args.max_steps,
        on_epoch=checkpoint,
    )
    version = args.version or args.out.name
    args.out.mkdir(parents=True, exist_ok=True)
    detector_serving_model(result.core, tta=recipe.tta).save(args.out / MODEL_FILE)
    card = new_card(
        version=version,
        architecture={
            "name": "lite0det",
            "tta": recipe.tta,
            "pooling": "mean",
            "params": count_params(result.core),
            "cell_stride": recipe.cell_stride,
            "description": detector_description(recipe.backbone, recipe.cell_stride),
        },
        input_spec=spec,
        calibration={"method": "identity"},
        threshold=0.5,
        training={
            "recipe": recipe.to_dict(),
            "seed": args.seed,
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "image_loss_sources": classified,
        },
        training_data={
            "fingerprint": fingerprint(list(train.records) + list(val_records)),
            "train_fingerprint": fingerprint(train.records),
            "val_fingerprint": fingerprint(val_records),
            "counts": describe(list(train.records) + list(val_records)),
            "splits_trained_on": ["train", "val"] if final_fit else ["train"],
        },
        status="trained; calibration and operating points not fitted yet (run classifier.evaluate)",
    )
    write_card(card, args.out / CARD_FILE)
    if val is not None:
        logits, cells = predict_detector(result.core, val.images, tta=recipe.tta)
        write_predictions(args.out / "val_predictions.csv", val.records, {f"logit_{recipe.tta}": logits})
        np.savez_compressed(args.out / "val_cells.npz", cells=cells.astype(np.float16))
    (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
    plot_curves(result.history, args.out / "curves.png", f"{version}: lite0det {recipe.size}px")
    log.info("best epoch %d; trained in %.0f s; wrote %s", result.best_epoch, result.seconds, args.out)
    return 0
