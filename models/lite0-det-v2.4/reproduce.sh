#!/usr/bin/env bash
# Rebuild lite0-det-v2.4 and every figure of its report from the data in ../shared. Run from the repository
# root after `make install`. lite0-det-v2.4 is lite0-det-v2.3's recipe (recipe.sh) trained on train + val of
# every source, the last epoch kept (a final fit: models/experiments/notes.md says why). Nothing is fitted on
# val, which it trained on: the TTA, calibration and both operating points come from the recipe's 3-fold
# grouped cross-validation (the same out-of-fold logits as lite0-det-v2.3's), the box rule is carried over
# from lite0-det-v2.3 (chosen on FracAtlas val), the OOD reference is fitted on the training images and the
# score reference on the out-of-fold scores; test is used only for the report.
# Time on 2 CPU cores: training about 60 min (step 1), cross-validation about 140 min (step 2), release 5 min.
set -euo pipefail
source models/lite0-det-v2.4/recipe.sh  # PY, DATA, RECIPE

# 1. The weights: the recipe trained on every source's train + val, the last epoch kept. By default they are
#    unpacked from the released model.keras (the run's card and curves travel with it; the run folder is not
#    kept twice); RETRAIN=1 trains them again (the augmentation draws its random numbers statelessly, so a
#    retrain on the same machine repeats the run).
RUN=classifier_runs/lite0-det-v2.4-unpacked
FROM=(--from-model models/lite0-det-v2.4)
if [[ "${RETRAIN:-0}" == 1 ]]; then
    $PY -m classifier.convert  # the registry-shipped ImageNet weights, converted and checked against PyTorch
    RUN=classifier_runs/lite0-det-v2.4
    FROM=()
    $PY -m classifier.train "${DATA[@]}" "${RECIPE[@]}" --train-on-val --version lite0-det-v2.4 --out "$RUN" \
        --verbose 2
fi

# 2. Grouped cross-validation of the same recipe (3 folds of whole clusters over train + val): its out-of-fold
#    logits are kept in models/experiments/runs/s384/; models/lite0-det-v2.3/reproduce.sh (CV=run) recomputes
#    them.
CV_DIR=models/experiments/runs/s384

# 3. Release: TTA (none or flip, within the inference budget), calibration and operating points on the
#    out-of-fold logits; the box rule of lite0-det-v2.3; test figures, card, report and figures/.
#    The TTA's cost is measured: run it on an otherwise idle machine.
$PY -m classifier.release --run "$RUN" "${FROM[@]}" --out models/lite0-det-v2.4 --version lite0-det-v2.4 "${DATA[@]}" \
    --oof "$CV_DIR" --tta-candidates none flip --boxes-from models/lite0-det-v2.3 \
    --compare models/lite0-cam-v1 --compare models/lite0-det-v2.3 --notes models/lite0-det-v2.4/notes.md
