# lite0-det-v2.4's data and training recipe, sourced by its reproduce.sh: lite0-det-v2.3's recipe unchanged
# (models/lite0-det-v2.3/recipe.sh), trained as a final fit on train + val (--train-on-val, the last epoch
# kept). Run from the repository root.
source models/lite0-det-v2.3/recipe.sh  # PY, DATA, RECIPE (384 px)
