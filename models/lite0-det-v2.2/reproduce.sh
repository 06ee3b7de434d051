#!/usr/bin/env bash
# Rebuild lite0-det-v2.2 and every figure of its report from the data in ../shared. Run from the repository
# root after `make install`. lite0-det-v2.2 is lite0-det-v2's weights (the recipe of
# models/lite0-det-v2.1/recipe.sh, trained at 320 px) served at the input size chosen on val among 320, 384
# and 416 px (notes.md gives the rule). Calibration, both operating points, the box threshold and the
# OOD/drift references are fitted on val at that size; test is used only for the report.
# Time on 2 CPU cores: about 20 minutes (the release; the weights are lite0-det-v2's, 38.5 min to train).
set -euo pipefail
source models/lite0-det-v2.1/recipe.sh  # PY, DATA, RECIPE (lite0-det-v2's, trained at 320 px)

# 0. The registry-shipped ImageNet EfficientNet-Lite0 weights, converted to Keras and checked against PyTorch
#    (only needed to retrain, RETRAIN=1).
# 1. The weights: lite0-det-v2's training run (models/lite0-det-v2/reproduce.sh, step 1), or, by default,
#    the released lite0-det-v2.1 unpacked (the same weights; lite0-det-v2.1's TTA was chosen on them).
if [[ "${RETRAIN:-0}" == 1 ]]; then
    $PY -m classifier.convert
    $PY -m classifier.train "${DATA[@]}" "${RECIPE[@]}" --out classifier_runs/lite0-det-v2 --verbose 2
    RUN=classifier_runs/lite0-det-v2
    FROM=()
else
    RUN=classifier_runs/lite0-det-v2.2-weights
    FROM=(--from-model models/lite0-det-v2.1)
fi

# 2. Release: the serving size on val (flip TTA, as lite0-det-v2.1 chose it on out-of-fold logits); then
#    calibration, operating points, box threshold and references on val at that size; test figures, card,
#    report and figures/. The throughput rule measures the forward pass: run it on an otherwise idle machine.
$PY -m classifier.release --run "$RUN" "${FROM[@]}" --out models/lite0-det-v2.2 --version lite0-det-v2.2 \
    "${DATA[@]}" --tta flip --input-size-candidates 320 384 416 \
    --compare models/lite0-cam-v1 --compare models/lite0-det-v2.1 --notes models/lite0-det-v2.2/notes.md
