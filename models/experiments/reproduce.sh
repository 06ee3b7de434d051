#!/usr/bin/env bash
# Rebuild models/experiments/experiments.md and on-384/experiments.md: recipe options screened on the 3-fold
# grouped cross-validation that lite0-det-v2.1 was released from (same seed, same held-out clusters; fold 1,
# or all three for the 384-px input), each against lite0-det-v2.1's recipe on the same held-out images; then,
# on the adopted 384-px recipe (lite0-det-v2.3's), against it. Run from the repository root after `make install`.
# Time on 2 CPU cores: about 33 min per 320-px fold and 45-51 min per 384-px fold (RERUN=1); the tables alone
# (from the runs kept in runs/) takes seconds.
set -euo pipefail
# lite0-det-v2.1's data and recipe (PY, DATA, RECIPE); each run changes one option of it.
source models/lite0-det-v2.1/recipe.sh
CV=(--cv 3 --cv-tta none flip --cv-test)
RUNS=models/experiments/runs

if [[ "${RERUN:-0}" == 1 ]]; then
    $PY -m classifier.convert
    run() {  # NAME FOLDS OPTION...: the recipe with OPTION..., trained and scored on the given folds
        local name=$1 folds=$2; shift 2
        $PY -m classifier.train "${DATA[@]}" "${RECIPE[@]}" "$@" "${CV[@]}" --folds $folds \
            --out classifier_runs/screen-$name
        mkdir -p $RUNS/$name
        cp classifier_runs/screen-$name/{cv_summary.json,oof-fold*.csv,test-fold*.csv} $RUNS/$name/
    }
    run cp1 0 --cluster-power 1.0          # every distinct radiograph weighs the same (1 / cluster size)
    run cons 0 --consistency-weight 0.1    # two views of each image per batch, their logits pulled together
    run s384 "0 1 2" --size 384            # a larger input for small fractures: all three folds
    run cons384 0 --size 384 --consistency-weight 0.3  # on the adopted 384-px recipe, a stronger weight
    run s384-seed7 "0 1 2" --size 384 --seed 7 --fold-seed 0  # the 384-px recipe again, another training seed
    $PY -m classifier.convert --variant lite1
    run s384-lite1 0 --size 384 --backbone lite1  # a deeper backbone (EfficientNet-Lite1) at 384 px
    run s384-clahe 0 --size 384 --clahe  # contrast-limited adaptive histogram equalisation before the network
    run s384-cells8 0 --size 384 --cell-stride 8  # a finer fracture-cell head: one cell per 8 x 8 pixels
    run s384-boxneg1 0 --size 384 --boxed-negative-weight 1.0  # the cells around the boxes as firm negatives
    run s384-cellw3 0 --size 384 --cell-loss-weight 3.0  # the backbone pulled harder by the per-cell loss
    run s384-centre 0 --size 384 --cell-target centre  # positives on each box's central third only
    run s384-ep7 "0 1 2" --size 384 --epochs 7  # seven epochs instead of five (fold 1 kept from before the stateless augmentation)
    run s384-rerun 0 --size 384  # the baseline again, same seed, now keeping each image's highest cell (cell_max)
    run s384-ema 0 --size 384 --ema-momentum 0.99  # a moving average of the weights evaluated and kept
    run s384-lr3e-4 "0 1" --size 384 --lr 3e-4  # a third of the peak learning rate (folds 1 and 2 of the three planned)
    run s384-fa-half "0 1" --size 384 --cv-train-share fracatlas=0.5  # half of FracAtlas's training clusters, the same steps
    run s384-aug-medium 0 --size 384 --augment medium  # milder augmentation: +-20 degrees, less zoom, shift and contrast
    run s384-fa-quarter 0 --size 384 --cv-train-share fracatlas=0.25  # a quarter of FracAtlas's training clusters, the same steps
    run s448-ep4 0 --size 448 --epochs 4  # FracAtlas at about its own resolution, four epochs to keep the training time
    run s384-no-kaggle 0 --size 384 --cv-train-share kaggle=0  # none of Kaggle's training clusters: what it adds to FracAtlas
    run s384-regularised 0 --size 384 --dropout 0.5 --drop-connect 0.4  # stronger regularisation: head dropout and stochastic depth
    run s384-ls 0 --size 384 --label-smoothing 0.1  # image targets 0.05 / 0.95: against confidently wrong clusters
fi

# The baseline is the shipped recipe's own fold 1 (its out-of-fold logits are kept with lite0-det-v2.1).
$PY -m classifier.experiments --baseline v2.1-cv=models/lite0-det-v2.1/cross-validation \
    --run cp1=$RUNS/cp1 --run cons=$RUNS/cons --run s384=$RUNS/s384 \
    --notes models/experiments/notes.md --out models/experiments
# The 384-px recipe (lite0-det-v2.3's) is the baseline of the screens run on it.
# The seed rerun measures the spread between two runs of one recipe; the two-seed ensemble (each model
# without flip: two forward passes, as the flip TTA) is compared as one run.
$PY -m classifier.experiments --baseline s384=$RUNS/s384 --run cons384=$RUNS/cons384 \
    --run s384-seed7=$RUNS/s384-seed7 --run s384-lite1=$RUNS/s384-lite1 --run s384-clahe=$RUNS/s384-clahe \
    --run s384-cells8=$RUNS/s384-cells8 --run s384-boxneg1=$RUNS/s384-boxneg1 --run s384-cellw3=$RUNS/s384-cellw3 \
    --run s384-centre=$RUNS/s384-centre --run s384-ep7=$RUNS/s384-ep7 --run s384-rerun=$RUNS/s384-rerun \
    --run s384-ema=$RUNS/s384-ema --run s384-lr3e-4=$RUNS/s384-lr3e-4 --run s384-fa-half=$RUNS/s384-fa-half \
    --run s384-aug-medium=$RUNS/s384-aug-medium --run s384-fa-quarter=$RUNS/s384-fa-quarter \
    --run s448-ep4=$RUNS/s448-ep4 --run s384-no-kaggle=$RUNS/s384-no-kaggle \
    --run s384-regularised=$RUNS/s384-regularised --run s384-ls=$RUNS/s384-ls \
    --ensemble two-seeds=$RUNS/s384:none+$RUNS/s384-seed7:none \
    --ensemble lite0-lite1=$RUNS/s384:none+$RUNS/s384-lite1:none \
    --notes models/experiments/notes.md --out models/experiments/on-384
# A post-hoc read-out of the shipped model, no training: a re-ranker of its first 10 fracture cells fitted on
# val (about 2 minutes; prints its figures, recorded in notes.md).
if [[ "${RERANK:-0}" == 1 ]]; then
    $PY models/experiments/rerank_top_cells.py --model models/lite0-det-v2.3
fi
# The cell head's maximum beside the image logit, cross-validated on the rerun's kept cell_max (seconds).
$PY models/experiments/cell_max_ranking.py --run $RUNS/s384-rerun
# FracAtlas's learning curve: held-out AUC by the share of its training clusters kept, and what each halving
# cost, paired (seconds; learning-curve.json and .png in on-384/).
$PY models/experiments/learning_curve.py --run full=$RUNS/s384 --run half=$RUNS/s384-fa-half \
    --run quarter=$RUNS/s384-fa-quarter --out models/experiments/on-384
# The shipped weights at a larger input on val, no training (the table from the kept logits in seconds;
# TTSIZE=1 scores val again, about 10 minutes).
$PY models/experiments/test_time_size.py $([[ "${TTSIZE:-0}" == 1 ]] || echo --from-scored)
