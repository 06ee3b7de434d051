"""A linear probe on the frozen ImageNet EfficientNet-Lite0: the baseline that fine-tuning must beat.

    python -m classifier.probe --data ../shared/datasets/bone-fracture-xray \
        --data ../shared/datasets/fracatlas --size 224 --out classifier_runs/probe-224

Global-average-pooled backbone features (averaged over the image and its mirror image), standardised,
and an L2 logistic regression with class-balanced weights per source. The regularisation strength is
chosen by grouped cross-validation over train + val clusters; the final fit uses train only, so that val
stays free for calibration and the threshold (``classifier.evaluate``). The result is written as an
ordinary artifact: the frozen backbone with the regression folded into its 1x1-conv CAM head.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import DEFAULT_CACHE, ImageSet, load_images, load_sources, select
from classifier.fitting import predict_logits
from classifier.metrics import source_metrics
from classifier.pipeline import grouped_folds, sample_weights
from classifier.preprocessing import model_input_batches
from classifier.recipe import Recipe

log = logging.getLogger("classifier.probe")

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def extract_features(core: Any, data: ImageSet, *, batch_size: int = 32) -> np.ndarray:
    """(N, 1280) mean-pooled features, averaged over the image and its left-right mirror."""
    import keras

    backbone = next(layer for layer in core.layers if isinstance(layer, keras.Model))
    pooled = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D()])
    out = []
    for _, x in model_input_batches(data.images, batch_size):
        both = np.concatenate([x, x[:, :, ::-1]], axis=0)
        f = np.asarray(pooled.predict_on_batch(both))
        out.append((f[: len(x)] + f[len(x) :]) / 2)
    return np.concatenate(out).astype(np.float32)


def fit_logistic(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, c: float) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(scaler.transform(features), labels, sample_weight=weights)
    return scaler, model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", default=None)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--backbone-weights", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
    from classifier.convert import ensure_backbone_weights
    from classifier.data import describe, fingerprint
    from classifier.models import count_params, lite0_core, serving_model

    started = time.perf_counter()
    recipe = Recipe(arch="lite0", size=args.size, epochs=0, tta="flip", dropout=0.0, drop_connect=0.0)
    records = load_sources(args.data)
    pool = load_images(
        select(records, splits=["train", "val"]), recipe.input_spec(), cache_dir=args.cache_dir
    )
    core = lite0_core(
        args.size,
        dropout=0.0,
        drop_connect_rate=0.0,
        backbone_weights=str(ensure_backbone_weights(args.backbone_weights)),
    )
    feature_file = args.cache_dir / f"probe-features-{args.size}-{fingerprint(pool.records)[:16]}.npy"
    if feature_file.exists():
        features = np.load(feature_file)
    else:
        features = extract_features(core, pool)
        feature_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(feature_file, features)
    log.info("features %s in %.0f s", features.shape, time.perf_counter() - started)

    labels = pool.labels
    weights = sample_weights(pool)
    folds = grouped_folds(pool.records, args.folds, seed=args.seed, max_held_cluster=40)
    cv: dict[str, Any] = {}
    for c in C_GRID:
        oof = np.zeros(len(labels), np.float32)
        for k in range(args.folds):
            tr, te = folds != k, folds == k
            scaler, model = fit_logistic(features[tr], labels[tr], weights[tr], c)
            oof[te] = model.decision_function(scaler.transform(features[te]))
        held = folds >= 0
        cv[str(c)] = source_metrics([r for r, h in zip(pool.records, held, strict=True) if h], oof[held])
        log.info("C=%g: %s", c, cv[str(c)])
    best_c = max(C_GRID, key=lambda c: cv[str(c)]["score"])
    log.info("chosen C=%g", best_c)

    train_mask = np.array([r.split == "train" for r in pool.records])
    scaler, model = fit_logistic(features[train_mask], labels[train_mask], weights[train_mask], best_c)
    coef = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - np.sum(model.coef_[0] * scaler.mean_ / scaler.scale_))
    head = core.get_layer("cam")
    head.set_weights([coef.reshape(1, 1, -1, 1).astype(np.float32), np.array([bias], np.float32)])

    # The folded head must reproduce the regression exactly.
    check = pool.subset(np.flatnonzero(~train_mask)[:16])
    np.testing.assert_allclose(
        predict_logits(core, check.images, tta="flip"),
        model.decision_function(scaler.transform(features[~train_mask][:16])),
        rtol=1e-3,
        atol=1e-3,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    serving_model(core, tta="flip").save(args.out / MODEL_FILE)
    train_records = [r for r, t in zip(pool.records, train_mask, strict=True) if t]
    val_records = [r for r, t in zip(pool.records, train_mask, strict=True) if not t]
    card = new_card(
        version=args.version or args.out.name,
        architecture={
            "name": "lite0-linear-probe",
            "tta": "flip",
            "params": count_params(core),
            "description": "frozen ImageNet EfficientNet-Lite0 + logistic regression on pooled features",
        },
        input_spec=recipe.input_spec(),
        training={
            "method": "L2 logistic regression on standardised features, class-balanced per source",
            "C": best_c,
            "cv": cv,
            "folds": args.folds,
            "seconds": round(time.perf_counter() - started, 1),
        },
        training_data={
            "fingerprint": fingerprint(pool.records),
            "train_fingerprint": fingerprint(train_records),
            "val_fingerprint": fingerprint(val_records),
            "counts": describe(pool.records),
        },
        status="trained; calibration and threshold not fitted yet (run classifier.evaluate)",
    )
    write_card(card, args.out / CARD_FILE)
    (args.out / "cv_summary.json").write_text(json.dumps({"C": best_c, "cv": cv}, indent=2))
    log.info("wrote %s in %.0f s", args.out, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
