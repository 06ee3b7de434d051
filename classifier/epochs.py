"""Keras pieces shared by both training loops (``fitting.fit`` and ``detector.fit_detector``): the learning
rate schedule and the callbacks.

``EpochRecord`` writes one history row per epoch (losses, seconds, the validation figures) and puts the
validation figures into the epoch's logs, so that ``BestEpoch`` keeps the best epoch's weights and Keras's
own ``EarlyStopping`` stops on the same figure. Imports Keras: training code only, never the web process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import keras

log = logging.getLogger("classifier.train")

# The validation figure epochs are chosen and stopped on (metrics.source_metrics' mean of the AUCs).
MONITOR = "score"


def warmup_cosine(peak: float, total_steps: int, warmup: float) -> Any:
    """One-cycle learning rate: from ``peak / 25`` up to ``peak`` over the first ``warmup`` share of the
    steps, then a cosine decay to ``peak / 1000``."""
    warm = max(1, int(warmup * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 25.0,
        decay_steps=max(1, total_steps - warm),
        warmup_target=peak,
        warmup_steps=warm,
        alpha=1e-3,
    )


class EpochRecord(keras.callbacks.Callback):
    """One history row per epoch: the training losses, the seconds it took and ``evaluate()``'s figures."""

    def __init__(
        self,
        evaluate: Callable[[], dict[str, Any]] | None,
        *,
        history: list[dict[str, Any]],
        first_epoch: int = 1,
        loss_keys: tuple[str, ...] = ("loss",),
    ) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.history = history
        self.first_epoch = first_epoch
        self.loss_keys = loss_keys
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        row: dict[str, Any] = {"epoch": self.first_epoch + epoch}
        row.update({k: float(logs.get(k, math.nan)) for k in self.loss_keys})
        row["train_seconds"] = round(time.perf_counter() - self.started, 1)
        if self.evaluate is not None:
            row.update(self.evaluate())
        self.history.append(row)
        logs.update(row)  # the callbacks after this one (BestEpoch, EarlyStopping) read the figures here
        log.info(
            "epoch %d: %s",
            row["epoch"],
            " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"
            ),
        )


class BestEpoch(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest ``MONITOR`` (the last epoch when ``select_best`` is
    off, or when there is no validation figure); ``restore`` puts them back."""

    def __init__(self, core: Any, *, select_best: bool = True) -> None:
        super().__init__()
        self.core = core
        self.select_best = select_best
        self.score = -math.inf
        self.epoch = -1
        self.weights: list[Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        number = int(logs.get("epoch", epoch + 1))
        score = float(logs.get(MONITOR, math.nan)) if self.select_best else math.nan
        if math.isnan(score):
            score = float(number)  # keep the last epoch
        if score > self.score:
            self.score, self.epoch, self.weights = score, number, self.core.get_weights()

    def restore(self) -> None:
        if self.weights is not None:
            self.core.set_weights(self.weights)


class SaveEachEpoch(keras.callbacks.Callback):
    """Hands each finished epoch's number, model and history row to ``save`` (per-epoch checkpoints)."""

    def __init__(self, core: Any, save: Callable[[int, Any, dict[str, Any]], None]) -> None:
        super().__init__()
        self.core = core
        self.save = save

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.save(int(logs.get("epoch", epoch + 1)), self.core, dict(logs))


def early_stopping(patience: int) -> list[keras.callbacks.Callback]:
    """Keras's EarlyStopping on the validation figure, or nothing when ``patience`` is 0."""
    if not patience:
        return []
    return [keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=patience, verbose=1)]
