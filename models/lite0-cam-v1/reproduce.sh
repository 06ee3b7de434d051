#!/usr/bin/env bash
# Rebuild the shipped model, its baselines, their evaluations and report.md from the data in ../shared.
# Every figure in report.md comes from these commands. Run from the repository root after `make install`;
# about 2 hours on 2 CPU cores. Calibration and thresholds are fitted on val, never on test.
set -euo pipefail
PY=${PY:-.venv/bin/python}
KAGGLE=../shared/datasets/bone-fracture-xray
FRACATLAS=../shared/datasets/fracatlas
RUNS=classifier_runs
BOTH=(--data "$KAGGLE" --data "$FRACATLAS")
mkdir -p "$RUNS"

# 0. The registry-shipped ImageNet EfficientNet-Lite0 weights, converted to Keras and checked against PyTorch.
$PY -m classifier.convert

# 1. The shipped model: EfficientNet-Lite0 fine-tuned on both sources; the epoch is chosen on val.
$PY -m classifier.train "${BOTH[@]}" --arch lite0 --size 224 --epochs 6 --augment medium --balance-sources \
    --tta flip --pooling lse --out "$RUNS/lite0-cam-v1" --version lite0-cam-v1 --verbose 2
$PY -m classifier.evaluate --model "$RUNS/lite0-cam-v1" "${BOTH[@]}" --split test --write-card

# 2. Baselines, each calibrated on its own validation predictions.
#    The founding notebooks' CNN (seed), trained from scratch on both sources the way the notebooks did.
$PY -m classifier.train "${BOTH[@]}" --arch seed --size 128 --epochs 15 --optimizer adam --augment standard \
    --tta none --out "$RUNS/seed-128" --version seed-128 --verbose 2
$PY -m classifier.evaluate --model "$RUNS/seed-128" "${BOTH[@]}" --split test --write-card
#    A linear probe: logistic regression on the frozen ImageNet backbone's pooled features (C by grouped CV).
$PY -m classifier.probe "${BOTH[@]}" --size 224 --out "$RUNS/probe-224" --version probe-224
$PY -m classifier.evaluate --model "$RUNS/probe-224" "${BOTH[@]}" --split test --write-card
#    The shipped recipe trained on the Kaggle set alone, tested on FracAtlas too: the shift between hospitals.
$PY -m classifier.train "${BOTH[@]}" --train-sources kaggle --arch lite0 --size 224 --epochs 6 \
    --augment medium --tta flip --pooling lse --out "$RUNS/lite0-kaggle-only" --version lite0-kaggle-only --verbose 2
$PY -m classifier.evaluate --model "$RUNS/lite0-kaggle-only" "${BOTH[@]}" --split test \
    --calibrate-sources kaggle --write-card
#    The seed trained and tested on the original Kaggle split (kaggle_split.csv): the size of the leak.
$PY -m classifier.train --data "$KAGGLE" --original-kaggle-split --arch seed --size 128 --epochs 15 \
    --optimizer adam --augment standard --tta none --out "$RUNS/seed-128-leaky" --version seed-128-leaky --verbose 2
$PY -m classifier.evaluate --model "$RUNS/seed-128-leaky" --data "$KAGGLE" --original-kaggle-split \
    --split test --write-card

# 3. The pooling choice checked by grouped cross-validation over train+val clusters (3 folds, 3 epochs
#    each: a reduced budget; out-of-fold predictions pooled over the folds).
for pooling in mean lse; do
  $PY -m classifier.train "${BOTH[@]}" --arch lite0 --size 224 --epochs 3 --augment medium --balance-sources \
      --tta flip --pooling "$pooling" --cv 3 --cv-tta flip --out "$RUNS/cv-$pooling" --verbose 2
done

# 4. Ship: copy the artifact and write the report with every comparison.
mkdir -p models/lite0-cam-v1
cp "$RUNS/lite0-cam-v1/model.keras" "$RUNS/lite0-cam-v1/card.json" "$RUNS/lite0-cam-v1/curves.png" models/lite0-cam-v1/
$PY -m classifier.report --model models/lite0-cam-v1 --eval "$RUNS/lite0-cam-v1/eval-test" \
    --notes models/lite0-cam-v1/notes.md \
    --compare "seed CNN (notebooks), both sources=$RUNS/seed-128/eval-test" \
    --compare "linear probe on frozen Lite0=$RUNS/probe-224/eval-test" \
    --compare "Lite0 fine-tuned on Kaggle only=$RUNS/lite0-kaggle-only/eval-test" \
    --compare "seed CNN on the original leaky Kaggle split=$RUNS/seed-128-leaky/eval-test" \
    --cv "Lite0 mean pooling, 3 epochs=$RUNS/cv-mean" --cv "Lite0 log-sum-exp pooling, 3 epochs=$RUNS/cv-lse" \
    --cv "linear probe=$RUNS/probe-224"
