"""Does the shipped model rank val better when it is shown its radiographs larger than it was trained at?

    .venv/bin/python models/experiments/test_time_size.py [--sizes 384 448 512] [--scored FILE.csv]

No training (rule and result in notes.md, "A larger input at test time only"). The network is fully
convolutional and its image logit is a mean over its stride-32 map, so the same weights run at any multiple
of 32: a network trained on zoomed augmentations may prefer its test radiographs larger (the "FixRes" effect).
The shipped model's own val radiographs (``predictions-val.csv``; val trained nothing, and the shipped
calibration and operating points were fitted on grouped out-of-fold predictions, not on val) are letterboxed
at each size and scored without and with the flip TTA; per source, each mode's AUC and its paired difference
against the shipped mode (384 px, flip) with a cluster-bootstrap interval. The logits go to ``--scored`` so
the table can be rebuilt without inference (``--from-scored``). About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from classifier.metrics import cluster_bootstrap, roc_auc
from classifier.scoring import read_predictions

MODEL = Path("models/lite0-det-v2.3")
SHIPPED = "384-flip"
SOURCES = ("fracatlas", "kaggle")
SCORED = Path("models/experiments/runs/test-time-size/val-logits.csv")


def score(rows: list[dict[str, str]], sizes: list[int]) -> dict[str, np.ndarray]:
    """Mode "<size>-<tta>" -> the image logits of ``rows``, the shipped weights at that input size."""
    import keras

    import classifier.layers  # noqa: F401  (registers the TTA layers the saved model holds)
    from classifier.decoding import decode_grayscale
    from classifier.detector import detector_core, predict_detector
    from classifier.preprocessing import InputSpec, letterbox_uint8

    serving = keras.saving.load_model(MODEL / "model.keras", compile=False)
    core = next(layer for layer in serving.layers if isinstance(layer, keras.Model))
    grays = [decode_grayscale(Path(row["path"]).read_bytes()) for row in rows]
    logits = {}
    for size in sizes:
        resized = detector_core(size)
        resized.set_weights(core.get_weights())
        canvases = np.stack([letterbox_uint8(gray, InputSpec(size=size))[0] for gray in grays])
        for tta in ("none", "flip"):
            logits[f"{size}-{tta}"] = predict_detector(resized, canvases, tta=tta, batch_size=16)[0]
    return logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[384, 448, 512])
    p.add_argument("--scored", type=Path, default=SCORED)
    p.add_argument("--from-scored", action="store_true", help="read the logits --scored holds; no inference")
    args = p.parse_args(argv)
    rows = [row for row in read_predictions(MODEL / "predictions-val.csv") if row["source"] in SOURCES]
    if args.from_scored:
        with args.scored.open() as handle:
            table = list(csv.DictReader(handle))
        modes = [name for name in table[0] if name != "path"]
        by_path = {row["path"]: row for row in table}
        logits = {mode: np.array([float(by_path[row["path"]][mode]) for row in rows]) for mode in modes}
    else:
        logits = score(rows, args.sizes)
        args.scored.parent.mkdir(parents=True, exist_ok=True)
        with args.scored.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", *logits])
            for i, row in enumerate(rows):
                writer.writerow([row["path"], *(f"{values[i]:.6f}" for values in logits.values())])
    source = np.array([row["source"] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    clusters = np.array([row["cluster"] for row in rows])
    sys.stdout.write(
        f"| val, {MODEL.name}'s weights | " + " | ".join(f"{s} AUC, paired" for s in SOURCES) + " |\n"
    )
    sys.stdout.write("|---|" + "---|" * len(SOURCES) + "\n")
    for mode, values in logits.items():
        cells = []
        for name in SOURCES:
            mine = source == name
            y, a, b = labels[mine], values[mine], logits[SHIPPED][mine]
            _, low, high = cluster_bootstrap(
                lambda w, y=y, a=a, b=b: roc_auc(y, a, w) - roc_auc(y, b, w), clusters[mine], y, n_boot=1000
            )
            auc = roc_auc(y, a)
            cells.append(
                f"{auc:.3f}"
                if mode == SHIPPED
                else f"{auc:.3f}, {auc - roc_auc(y, b):+.3f} [{low:+.3f}, {high:+.3f}]"
            )
        sys.stdout.write(f"| {mode}{' (shipped)' if mode == SHIPPED else ''} | " + " | ".join(cells) + " |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
