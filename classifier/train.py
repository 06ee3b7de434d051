"""Train a classifier, or cross-validate a recipe, on one or more sources.

    python -m classifier.train --data ../shared/datasets/bone-fracture-xray \
        --data ../shared/datasets/fracatlas --arch lite0 --size 224 --epochs 6 --out classifier_runs/lite0-224

trains on ``train``, checks ``val`` after every epoch (ROC-AUC per source, per image and per cluster),
keeps the best epoch (checkpointing and early stopping on validation AUC), and writes a serving artifact
(``model.keras`` + ``card.json``), ``val_predictions.csv``, ``history.json`` and ``curves.png``. The
calibration and operating threshold are fitted afterwards by ``python -m classifier.evaluate`` on the
validation predictions.

    python -m classifier.train ... --cv 3 --out classifier_runs/cv-lite0-224

cross-validates the recipe instead, with whole clusters per fold over train + val (StratifiedGroupKFold
by source and label): recipes are chosen on these out-of-fold figures, never on test.

This module is the command line; the recipe and its options are ``classifier.recipe``, the training loop and
the artifact ``classifier.fitting``, the ``--arch lite0det`` path ``classifier.train_detector``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import (
    DEFAULT_CACHE,
    Record,
    load_images,
    load_kaggle_original_split,
    load_sources,
    select,
)
from classifier.figures import plot_curves
from classifier.fitting import fit, predict_logits, save_artifact
from classifier.metrics import source_metrics
from classifier.pipeline import grouped_folds
from classifier.preprocessing import InputSpec
from classifier.recipe import AUGMENT_PRESETS, Recipe, recipe_arguments, recipe_from_args
from classifier.scoring import write_predictions

log = logging.getLogger("classifier.train")
# Recipe options of the image-level networks (lite0, seed, tiny) that --arch lite0det's loop has no use for.
DETECTOR_UNUSED = ("freeze_epochs", "class_balance", "optimizer", "pooling", "patience")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True, help="a data directory (repeatable)")
    p.add_argument(
        "--original-kaggle-split", action="store_true", help="use kaggle_split.csv (the leaky split)"
    )
    p.add_argument("--train-sources", nargs="*", default=None, help="train only on these sources")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--version", default=None, help="model version for the card (default: the out folder name)"
    )
    recipe_arguments(p)
    p.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default="standard")
    p.add_argument("--rotation", type=float, default=None, help="the preset's rotation, in degrees")
    p.add_argument("--zoom", type=float, default=None, help="the preset's zoom")
    p.add_argument("--last-epoch", action="store_true", help="keep the last epoch, not the best on val")
    p.add_argument(
        "--train-on-val",
        action="store_true",
        help="lite0det: a final fit on train + val, with no val to score (the last epoch is kept); "
        "classifier.release reads it from the card and fits nothing on val",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fold-seed",
        type=int,
        default=None,
        help="seed of the CV fold split (default: --seed); a rerun with another --seed and the same "
        "--fold-seed holds out the same clusters, so two training runs of one recipe can be paired",
    )
    p.add_argument("--cv", type=int, default=0, help="cross-validate with this many grouped folds")
    p.add_argument("--folds", type=int, nargs="*", default=None, help="run only these CV folds")
    p.add_argument("--cv-tta", nargs="*", default=["none", "flip", "dihedral"])
    p.add_argument(
        "--cv-test",
        action="store_true",
        help="lite0det: each fold model also scores test (shown beside the CV figures, never chosen on)",
    )
    p.add_argument("--max-held-cluster", type=int, default=40, help="larger clusters always train in CV")
    p.add_argument(
        "--cv-train-share",
        action="append",
        default=[],
        metavar="SOURCE=SHARE",
        help="lite0det CV: train each fold on this share of the source's training clusters (drawn per fold, "
        "fold seed), at the full fold's number of steps: a point on a learning curve; 0 trains without the "
        "source, whose held-out images are still scored (repeatable)",
    )
    p.add_argument("--backbone-weights", type=Path, default=None)
    p.add_argument(
        "--from-scratch", action="store_true", help="random backbone weights (software tests, not models)"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (smoke tests)")
    p.add_argument("--verbose", type=int, default=1, help="Keras progress: 1 bar, 2 one line per epoch")
    args = p.parse_args(argv)
    args.cv_train_share = _shares(p, args.cv_train_share)
    if args.cv_train_share and (not args.cv or args.arch != "lite0det"):
        p.error("--cv-train-share is a lite0det cross-validation option: it needs --arch lite0det and --cv")
    if args.arch == "lite0det":
        # Options of the older image-level networks that the detector's own loop does not use: given to it,
        # they would change nothing while the card recorded them.
        unused = [name for name in DETECTOR_UNUSED if getattr(args, name) != p.get_default(name)]
        if unused:
            flags = ", ".join("--" + name.replace("_", "-") for name in unused)
            p.error(f"{flags}: not used by --arch lite0det (AdamW, mean pooling, every epoch scored)")
    if args.train_on_val and (args.arch != "lite0det" or args.cv):
        p.error("--train-on-val is a final fit of --arch lite0det: not with --cv, nor another --arch")
    if args.fold_seed is None:  # resolved once, for both cross-validations (train and train_detector)
        args.fold_seed = args.seed
    return args


def _shares(parser: argparse.ArgumentParser, values: list[str]) -> dict[str, float]:
    shares: dict[str, float] = {}
    for value in values:
        source, _, share = value.partition("=")
        try:
            shares[source] = float(share)
        except ValueError:
            parser.error(f"--cv-train-share takes SOURCE=SHARE, not {value!r}")
        if not source or not 0 <= shares[source] <= 1:
            parser.error(f"--cv-train-share {value!r}: a source and a share in [0, 1] (0: none of it)")
    return shares


def load_records(args: argparse.Namespace) -> list[Record]:
    if args.original_kaggle_split:
        if len(args.data) != 1:
            raise SystemExit("--original-kaggle-split takes the one Kaggle data directory")
        return load_kaggle_original_split(args.data[0])
    return load_sources(args.data)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    recipe = recipe_from_args(args)
    records = load_records(args)
    backbone = None
    if recipe.arch in ("lite0", "lite0det") and not args.from_scratch:
        from classifier.convert import ensure_backbone_weights

        backbone = ensure_backbone_weights(args.backbone_weights, variant=recipe.backbone)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = recipe.input_spec()
    if recipe.arch == "lite0det":
        from classifier.train_detector import run_detector

        return run_detector(args, recipe, records, spec, backbone)
    if args.cv:
        return run_cv(args, recipe, records, spec, backbone)

    train_records = select(records, splits=["train"], sources=args.train_sources)
    val_records = select(records, splits=["val"], sources=args.train_sources)
    log.info("training on %d images, validating on %d", len(train_records), len(val_records))
    train = load_images(train_records, spec, cache_dir=args.cache_dir)
    val = load_images(val_records, spec, cache_dir=args.cache_dir) if val_records else None
    result = fit(
        recipe,
        train,
        val,
        seed=args.seed,
        backbone_weights=backbone,
        max_steps=args.max_steps,
        select_best=not args.last_epoch,
        verbose=args.verbose,
    )
    version = args.version or args.out.name
    save_artifact(
        args.out,
        result,
        recipe,
        version=version,
        train_records=train.records,
        val_records=val.records if val else [],
        seed=args.seed,
    )
    if val is not None:
        logits = {
            t: predict_logits(result.core, val.images, tta=t, pooling=recipe.pooling)
            for t in sorted({"none", recipe.tta})
        }
        write_predictions(
            args.out / "val_predictions.csv", val.records, {f"logit_{t}": v for t, v in logits.items()}
        )
    (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
    if result.history:
        plot_curves(result.history, args.out / "curves.png", f"{version}: {recipe.arch} {recipe.size}px")
    log.info("best epoch %d; trained in %.0f s; wrote %s", result.best_epoch, result.seconds, args.out)
    return 0


def run_cv(
    args: argparse.Namespace, recipe: Recipe, records: list[Record], spec: InputSpec, backbone: Path | None
) -> int:
    pool_records = select(records, splits=["train", "val"], sources=args.train_sources)
    pool = load_images(pool_records, spec, cache_dir=args.cache_dir)
    folds = grouped_folds(pool.records, args.cv, seed=args.fold_seed, max_held_cluster=args.max_held_cluster)
    run_folds = args.folds if args.folds is not None else list(range(args.cv))
    oof: dict[str, np.ndarray] = {t: np.full(len(pool.records), np.nan, np.float32) for t in args.cv_tta}
    histories: dict[int, list[dict[str, Any]]] = {}
    seconds: dict[int, float] = {}
    for k in run_folds:
        train_idx, held_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        log.info("fold %d/%d: %d training, %d held-out images", k + 1, args.cv, len(train_idx), len(held_idx))
        held = pool.subset(held_idx)
        result = fit(
            recipe,
            pool.subset(train_idx),
            held,
            seed=args.seed + k,
            backbone_weights=backbone,
            max_steps=args.max_steps,
            select_best=False,  # out-of-fold figures come from the last epoch: no selection on held-out data
            verbose=args.verbose,
        )
        histories[k], seconds[k] = result.history, result.seconds
        for t in args.cv_tta:
            oof[t][held_idx] = predict_logits(result.core, held.images, tta=t, pooling=recipe.pooling)
        done = np.isin(folds, run_folds[: run_folds.index(k) + 1])
        write_predictions(
            args.out / "oof_predictions.csv",
            [pool.records[i] for i in np.flatnonzero(done)],
            {f"logit_{t}": oof[t][done] for t in args.cv_tta} | {"fold": folds[done].astype(np.float32)},
        )
        summary = {
            "recipe": recipe.to_dict(),
            "folds": args.cv,
            "seed": args.seed,  # fold k trains with seed + k
            "fold_seed": args.fold_seed,
            "folds_run": run_folds[: run_folds.index(k) + 1],
            "seconds_per_fold": seconds,
            "oof": {
                t: source_metrics([pool.records[i] for i in np.flatnonzero(done)], oof[t][done])
                for t in args.cv_tta
            },
            "history": histories,
            "per_epoch_mean": _mean_history(histories),
        }
        (args.out / "cv_summary.json").write_text(json.dumps(summary, indent=2))
        log.info("fold %d done in %.0f s; pooled OOF so far: %s", k + 1, result.seconds, summary["oof"])
    return 0


def _mean_history(histories: dict[int, list[dict[str, Any]]]) -> list[dict[str, float]]:
    if not histories:
        return []
    n = min(len(h) for h in histories.values())
    out = []
    for e in range(n):
        keys = set.intersection(*(set(h[e]) for h in histories.values()))
        row = {}
        for key in sorted(keys):
            values = [h[e][key] for h in histories.values()]
            if all(isinstance(v, int | float) for v in values):
                row[key] = float(np.nanmean(values))
        out.append(row)
    return out


if __name__ == "__main__":
    sys.exit(main())
