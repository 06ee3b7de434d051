# lite0-det-v2.1's data and training recipe, sourced by its reproduce.sh and by models/experiments/reproduce.sh
# (whose screens each change one option of it). Run from the repository root.
PY=${PY:-.venv/bin/python}
D=../shared/datasets
DATA=(--data $D/bone-fracture-xray --data $D/fracatlas --data $D/bone-fracture-boxes)
RECIPE=(--arch lite0det --size 320 --epochs 5 --batch-size 32 --augment strong --balance-sources
        --cluster-power 0.5 --tta flip)
