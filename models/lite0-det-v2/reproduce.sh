#!/usr/bin/env bash
# Rebuild lite0-det-v2 and every figure of its report from the data in ../shared. Run from the repository
# root after `make install`; about 45 minutes on 2 CPU cores (38 of them training). Calibration, the two
# operating points, the box threshold and the OOD/drift references are fitted on val; test is used only
# for the report.
set -euo pipefail
PY=${PY:-.venv/bin/python}
D=../shared/datasets
RUN=classifier_runs/lite0-det-v2

# 0. The registry-shipped ImageNet EfficientNet-Lite0 weights, converted to Keras and checked against PyTorch.
$PY -m classifier.convert

# 1. Train: Lite0 at 320 px, image head (mean pooling) + stride-16 fracture-cell head learnt from boxes;
#    strong augmentation (flips, right-angle turns, rotation +-45, zoom +-20 %, shift, brightness, contrast,
#    gamma); each source weighs the same, classes balanced within it, images weighed 1/sqrt(cluster size);
#    AdamW one-cycle, 5 epochs, the epoch with the best mean val AUC kept.
$PY -m classifier.train --data $D/bone-fracture-xray --data $D/fracatlas --data $D/bone-fracture-boxes \
    --arch lite0det --size 320 --epochs 5 --batch-size 32 --augment strong --balance-sources \
    --cluster-power 0.5 --tta flip --out "$RUN" --version lite0-det-v2 --verbose 2

# 2. Release: choose the test-time augmentation on val (mean val AUC, within 150 ms per radiograph), fit
#    calibration, operating points, box threshold and references on val, evaluate on test, write model.keras,
#    card.json, report.md and figures/.
$PY -m classifier.release --run "$RUN" --out models/lite0-det-v2 \
    --data $D/bone-fracture-xray --data $D/fracatlas --data $D/bone-fracture-boxes \
    --compare models/lite0-cam-v1 --notes models/lite0-det-v2/notes.md --tta-candidates none flip rot4 dihedral
