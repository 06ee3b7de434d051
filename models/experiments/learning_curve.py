"""FracAtlas's learning curve: held-out AUC against the share of its training clusters kept, from kept runs.

    RUNS=models/experiments/runs
    .venv/bin/python models/experiments/learning_curve.py --run full=$RUNS/s384 \\
        --run half=$RUNS/s384-fa-half --run quarter=$RUNS/s384-fa-quarter --out models/experiments/on-384

No training (rules and readings in notes.md, "Half of FracAtlas" and "A quarter of FracAtlas"). Each run is a
``classifier.train --cv-train-share`` point of one split (``--fold-seed 0``), so a fold holds out the same
images in every run. Prints, per fold, the AUC of each share with a cluster-bootstrap interval and what each
halving cost (paired on the same held-out images); writes ``learning-curve.json`` and ``learning-curve.png``.
Seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classifier.experiments import learning_curve, read_experiment
from classifier.figures import plot_learning_curve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=FOLDER of a kept CV run")
    parser.add_argument("--source", default="fracatlas")
    parser.add_argument("--mode", default="flip", help="which logits: none or flip")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def interval(figure: dict[str, float], signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{figure['value']:{f}} [{figure['low']:{f}}, {figure['high']:{f}}]"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    curve = learning_curve([read_experiment(run) for run in args.run], args.source, args.mode)
    for point in curve["points"]:
        say(f"fold {point['fold'] + 1}, share {point['share']:g} ({point['run']}): {args.source} AUC "
            f"{interval(point['auc'])} on {point['images']} images")  # fmt: skip
    for step in curve["steps"]:
        cost = step["difference"]
        say(f"fold {step['fold'] + 1}, share {step['from']:g} -> {step['to']:g}: "
            f"{interval(cost, signed=True)} (paired, {cost['images']} images)")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning-curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    title = f"{args.source}: held-out AUC by training share"
    plot_learning_curve(curve, args.out / "learning-curve.png", title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
