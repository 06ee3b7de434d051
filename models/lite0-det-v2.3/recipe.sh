# lite0-det-v2.3's data and training recipe, sourced by its reproduce.sh: lite0-det-v2.1's recipe
# (models/lite0-det-v2.1/recipe.sh) at a 384-px input, the one change adopted by the 3-fold grouped
# cross-validation in models/experiments/notes.md. Run from the repository root.
source models/lite0-det-v2.1/recipe.sh  # PY, DATA, RECIPE (320 px)
RECIPE=("${RECIPE[@]}" --size 384)  # the later --size wins
