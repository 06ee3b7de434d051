"""Every recipe experiment side by side, on the folds of the grouped cross-validation they share.

    python -m classifier.experiments --baseline classifier_runs/screen-base \\
        --run classifier_runs/screen-cp1 --run classifier_runs/screen-s384 \\
        --run v2.1-cv=models/lite0-det-v2.1/cross-validation --out models/experiments

An experiment is one ``classifier.train --arch lite0det --cv 3 [--folds K] --cv-test`` run: the same folds
(same seed), a recipe that differs from the baseline's in the options the table names. For each fold both
runs held out (the same images), this reads the out-of-fold logits and gives:

- the cross-validated figures: AUC per source, per image and per cluster; the AUC difference to the baseline
  on the same held-out images with a cluster-bootstrap interval (paired: the interval is the recipe's
  effect, not the fold's difficulty); calibration and both operating points fitted on the fold's held-out
  part (per cluster, as a release fits them), and on that same part the Doubt share and the share of
  multi-image Kaggle clusters in one band; the cell head's pointing game on the held-out boxes;
- the test figures of the same fold model, under that calibration and those points (``--cv-test``): what
  the experiment would have given on test. They are shown, never chosen on: the choice is the paired
  cross-validated difference;
- for the baseline, when it has several folds: each calibration map (Platt, isotonic; images weighed by
  cluster size to a power) cross-fitted over its folds, with every source's ECE: whether a recalibration of
  the same logits, without retraining, could meet the calibration goal.

Writes ``experiments.json`` and ``experiments.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.bands import BAND_NAMES, band_of, cluster_weights, fit_bands, one_band_share, source_report
from classifier.card import calibrate
from classifier.data import Record
from classifier.metrics import (
    bootstrap_interval,
    cluster_bootstrap,
    cluster_means,
    expected_calibration_error,
    fit_platt,
    roc_auc,
    source_metrics,
)
from classifier.recipe import Recipe
from classifier.scoring import Logits, read_predictions
from classifier.train_detector import image_sources

# Intervals of the paired differences and of the test figures (cluster bootstrap).
N_BOOT = 500
# The recipe fields compared between runs (the rest of a CV summary is not the recipe).
IGNORED_RECIPE_FIELDS = {"tta"}
# The key of the figures over all the folds a run shares with the baseline, beside the per-fold keys.
POOLED = "all"


@dataclass
class Experiment:
    """One cross-validation run: its summary, and per fold its held-out and (with --cv-test) test rows."""

    name: str
    path: Path
    summary: dict[str, Any]
    held: dict[int, list[dict[str, str]]]
    test: dict[int, list[dict[str, str]]] = field(default_factory=dict)


def read_experiment(path: Path | str) -> Experiment:
    """A CV run's folder, or ``NAME=FOLDER`` to show it under another name than the folder's."""
    name, _, folder = str(path).rpartition("=")
    path = Path(folder)
    summary = json.loads((path / "cv_summary.json").read_text())
    held = {int(f.stem.removeprefix("oof-fold")): read_predictions(f) for f in path.glob("oof-fold*.csv")}
    test = {int(f.stem.removeprefix("test-fold")): read_predictions(f) for f in path.glob("test-fold*.csv")}
    return Experiment(name or path.name, path, summary, held, test)


def ensemble_experiment(spec: str, mode: str) -> Experiment:
    """``NAME=RUN:TTA+RUN:TTA...``: the mean of several runs' logits (each under its own TTA) as one run
    whose ``mode`` logits are that mean, on the folds and images every member scored.

    Members are runs of one split (``--fold-seed``) with different training seeds, so each held-out image
    is scored by models that never trained on it. The ensemble has no cell head of its own: its
    localisation is left out rather than borrowed from a member. Its minutes are the members' sum.
    """
    name, _, members_spec = spec.rpartition("=")
    members = []
    for member in members_spec.split("+"):
        folder, _, tta = member.rpartition(":")
        members.append((read_experiment(folder), tta))
    if not name:
        name = "+".join(run.name for run, _ in members)

    def mean_rows(parts: list[dict[int, list[dict[str, str]]]], fold: int) -> list[dict[str, str]]:
        by_path = [{row["path"]: row for row in part[fold]} for part in parts]
        shared = [path for path in by_path[0] if all(path in other for other in by_path[1:])]
        rows = []
        for path in shared:
            member_logits = [
                float(rows_of[path][f"logit_{tta}"])
                for rows_of, (_, tta) in zip(by_path, members, strict=True)
            ]
            logit = np.mean(member_logits)
            rows.append({**by_path[0][path], f"logit_{mode}": f"{logit:.6f}"})
        return rows

    first = members[0][0]
    folds = set.intersection(*(set(run.held) for run, _ in members))
    test_folds = set.intersection(*(set(run.test) for run, _ in members))
    seconds = {
        str(k): sum(float(run.summary["seconds_per_fold"][str(k)]) for run, _ in members) for k in folds
    }
    shown = " + ".join(f"{run.name}:{tta}" for run, tta in members)
    summary = {"recipe": first.summary["recipe"], "seconds_per_fold": seconds, "members": shown}
    held = {k: mean_rows([run.held for run, _ in members], k) for k in sorted(folds)}
    test = {k: mean_rows([run.test for run, _ in members], k) for k in sorted(test_folds)}
    return Experiment(name, first.path, summary, held, test)


def rows_to_logits(rows: Sequence[dict[str, str]], mode: str) -> Logits:
    records = [
        Record(
            path=Path(row["path"]),
            source=row["source"],
            split=row["split"],
            label=int(float(row["label"])),
            cluster=row["cluster"],
            hardware=int(float(row["hardware"])),
        )
        for row in rows
    ]
    return Logits(records, np.array([float(row[f"logit_{mode}"]) for row in rows]))


def recipe_changes(recipe: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The options in which ``recipe`` differs from the baseline's, each as ``name: old -> new``."""
    changes = []
    for name in sorted(set(recipe) | set(baseline)):
        if name in IGNORED_RECIPE_FIELDS or recipe.get(name) == baseline.get(name):
            continue
        if isinstance(recipe.get(name), dict) and isinstance(baseline.get(name), dict):
            changes.append(f"{name} ({'; '.join(recipe_changes(recipe[name], baseline[name]))})")
        else:
            changes.append(f"{name}: {baseline.get(name)} -> {recipe.get(name)}")
    return changes


def run_changes(run: Experiment, baseline: Experiment, base_recipe: dict[str, Any]) -> str:
    """What sets a run apart from the baseline: an ensemble's members, recipe options, a training seed, the
    share of a source's training clusters it trained on (a learning-curve point)."""
    if "members" in run.summary:
        return f"mean of {run.summary['members']}"
    changes = recipe_changes(full_recipe(run.summary["recipe"]), base_recipe)
    seed, base_seed = run.summary.get("seed", 0), baseline.summary.get("seed", 0)
    if seed != base_seed:
        changes.append(f"training seed: {base_seed} -> {seed}")
    shares, base_shares = run.summary.get("train_share", {}), baseline.summary.get("train_share", {})
    for source in sorted(set(shares) | set(base_shares)):
        if shares.get(source, 1.0) != base_shares.get(source, 1.0):
            changes.append(
                f"{source} training clusters: {base_shares.get(source, 1.0):g} -> {shares.get(source, 1.0):g}"
            )
    return "; ".join(changes) or "the baseline recipe"


def full_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A stored recipe with the options it predates at their defaults (which is what it trained with)."""
    return Recipe.from_dict(recipe).to_dict()


def paired_auc_difference(
    run: Logits, baseline: Logits, source: str, *, n_boot: int = N_BOOT
) -> dict[str, float]:
    """AUC(run) - AUC(baseline) on the images of ``source`` both scored, resampling whole clusters."""
    theirs = {str(r.path): i for i, r in enumerate(baseline.records) if r.source == source}
    mine = [i for i, r in enumerate(run.records) if str(r.path) in theirs]
    other = [theirs[str(run.records[i].path)] for i in mine]
    labels = run.labels[mine]
    a, b = run.logits[mine], baseline.logits[other]

    def difference(w: np.ndarray) -> float:
        return roc_auc(labels, a, w) - roc_auc(labels, b, w)

    value, low, high = cluster_bootstrap(difference, run.clusters[mine], labels, n_boot=n_boot)
    return {"value": value, "low": low, "high": high, "images": len(mine)}


def band_figures(scores: Logits, probabilities: np.ndarray, points: dict[str, Any]) -> dict[str, Any]:
    """Per source: the share of images in Doubt and (where clusters group images) the one-band share."""
    out: dict[str, Any] = {}
    bands = band_of(probabilities, points["sensitive"], points["specific"])
    for source in image_sources(scores.records):
        idx = scores.where(source)
        one_band, multi = one_band_share(scores.clusters[idx], bands[idx])
        out[source] = {
            "doubt_share": float(np.mean(bands[idx] == BAND_NAMES.index("doubt"))),
            "one_band": one_band if multi else None,
        }
    return out


def held_out_figures(
    held: Logits, base: Logits, *, fitted_on: str, n_boot: int = N_BOOT
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The cross-validated figures of held-out logits, paired against the baseline's on the same images.

    Returns (figures, calibration, operating points): both fitted on ``held`` per cluster, as a release
    fits them.
    """
    sources = image_sources(held.records)
    keep = np.isin(held.sources, sources)
    calibration, probabilities, points = fit_bands(held, sources, fitted_on=fitted_on)
    figures: dict[str, Any] = {
        "auc": source_metrics([held.records[i] for i in np.flatnonzero(keep)], held.logits[keep]),
        "vs_baseline": {s: paired_auc_difference(held, base, s, n_boot=n_boot) for s in sources},
        "bands": band_figures(held, probabilities, points),
        "points": {"sensitive": points["sensitive"], "specific": points["specific"]},
    }
    return figures, calibration, points


def fold_figures(
    run: Experiment, baseline: Experiment, fold: int, mode: str, *, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """One run's figures on one fold: cross-validated, paired against the baseline, and on test."""
    held = rows_to_logits(run.held[fold], mode)
    base = rows_to_logits(baseline.held[fold], mode)
    figures, calibration, points = held_out_figures(
        held, base, fitted_on=f"held-out fold {fold}", n_boot=n_boot
    )
    figures["localisation"] = run.summary.get(f"fold{fold}", {}).get("localisation", {})
    figures["minutes"] = float(run.summary["seconds_per_fold"][str(fold)]) / 60
    if fold in run.test:
        test = rows_to_logits(run.test[fold], mode)
        test_probabilities = calibrate(test.logits, calibration)
        figures["test"] = {
            source: summarise_source(
                source_report(test, test.where(source), test_probabilities, points, n_boot)
            )
            for source in image_sources(held.records)
        }
        figures["test_localisation"] = run.summary.get(f"fold{fold}_test", {}).get("localisation", {})
    return figures


def pooled_figures(
    run: Experiment, baseline: Experiment, folds: Sequence[int], mode: str, *, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """The folds' held-out parts together: every image once, scored by the fold model that did not train
    on it. Calibration and points are then fitted on all of them, as a release from these out-of-fold
    logits would fit them; pointing is the mean over the folds."""
    held = rows_to_logits([row for k in folds for row in run.held[k]], mode)
    base = rows_to_logits([row for k in folds for row in baseline.held[k]], mode)
    figures, _, _ = held_out_figures(held, base, fitted_on=f"held-out folds {list(folds)}", n_boot=n_boot)
    per_fold = [run.summary.get(f"fold{k}", {}).get("localisation", {}) for k in folds]
    shared = sorted(set.intersection(*(set(loc) for loc in per_fold)))  # sorted: one file on every rebuild
    figures["localisation"] = {
        key: float(np.mean([loc[key] for loc in per_fold])) for key in shared if key.endswith("_pointing")
    }
    figures["minutes"] = sum(float(run.summary["seconds_per_fold"][str(k)]) for k in folds) / 60
    return figures


# Calibrators screened on the baseline's out-of-fold logits: Platt (what a release fits) and isotonic
# regression (any monotone map), each with images weighed 1 / (cluster size) ** power.
CALIBRATORS = tuple((method, power) for method in ("platt", "isotonic") for power in (0.0, 0.5, 1.0))


def fit_calibrator(
    logits: np.ndarray, labels: np.ndarray, clusters: np.ndarray, method: str, power: float
) -> Callable[[np.ndarray], np.ndarray]:
    """A calibration map fitted on (logits, labels), each image weighing 1 / (its cluster's size) ** power."""
    weights = cluster_weights(clusters) ** power
    if method == "platt":
        platt = fit_platt(logits, labels, weights)
        return lambda x: calibrate(x, platt)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(logits, labels, sample_weight=weights)
        return lambda x: np.asarray(iso.predict(x), dtype=np.float64)
    raise ValueError(f"unknown calibrator {method!r}")


def recalibration_screen(run: Experiment, mode: str) -> list[dict[str, Any]]:
    """Could another calibration of the same logits bring every source's ECE down? Each calibrator is
    cross-fitted over the run's folds (fitted on the other folds' held-out logits, applied to this fold's)
    and scored per source, per image and per cluster (mean probability of a cluster's images)."""
    folds = sorted(run.held)
    scored = {k: rows_to_logits(run.held[k], mode) for k in folds}
    sources = image_sources(scored[folds[0]].records)
    every = Logits(
        [r for k in folds for r in scored[k].records], np.concatenate([scored[k].logits for k in folds])
    )
    rows = []
    for method, power in CALIBRATORS:
        probabilities = []
        for k in folds:
            rest = [scored[j] for j in folds if j != k]
            logits = np.concatenate([r.logits for r in rest])
            labels = np.concatenate([r.labels for r in rest])
            clusters = np.concatenate([r.clusters for r in rest])
            keep = np.isin(np.concatenate([r.sources for r in rest]), sources)
            calibrator = fit_calibrator(logits[keep], labels[keep], clusters[keep], method, power)
            probabilities.append(calibrator(scored[k].logits))
        p = np.concatenate(probabilities)
        row: dict[str, Any] = {"method": method, "cluster_power": power}
        for source in sources:
            idx = every.where(source)
            _, cluster_labels, cluster_p = cluster_means(every.clusters[idx], every.labels[idx], p[idx])
            row[source] = {
                "ece": expected_calibration_error(every.labels[idx], p[idx]),
                "cluster_ece": expected_calibration_error(cluster_labels, cluster_p),
            }
        rows.append(row)
    return rows


def summarise_source(report: dict[str, Any]) -> dict[str, Any]:
    """What the experiments table shows of one source's test report (``bands.source_report``)."""
    images = report["images"]
    out = {
        "auc": images["auc"],
        "cluster_auc": report["clusters"]["auc"]["value"],
        "sensitive": {k: images["sensitive"][k]["value"] for k in ("sensitivity", "specificity")},
        "specific": {k: images["specific"][k]["value"] for k in ("sensitivity", "specificity")},
        "doubt_share": images["bands"]["doubt"]["share"],
        "ece": images["ece"],
    }
    if "consistency" in report:
        out["one_band"] = report["consistency"]["share_one_band"]
    if "no_hardware" in report:
        out["auc_no_hardware"] = report["no_hardware"]["images"]["auc"]["value"]
    return out


def training_share(run: Experiment, source: str) -> float:
    """The share of ``source``'s training clusters the run trained on (1 but for a learning-curve point)."""
    return float(run.summary.get("train_share", {}).get(source, 1.0))


def learning_curve(
    runs: Sequence[Experiment], source: str, mode: str, *, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """``source``'s held-out AUC against the share of its training clusters each run kept, per fold.

    ``points``: one per run and fold, the AUC on the fold's held-out images of ``source`` with a
    cluster-bootstrap interval. ``steps``: for each two runs next to each other in share (largest first) and
    each fold both scored, the paired AUC difference of the smaller share against the larger on the same
    images: what each halving cost. Runs of one split (``--fold-seed``), so a fold holds out the same images.
    """
    ordered = sorted(runs, key=lambda run: -training_share(run, source))
    # Each run's folds parsed once: the points and the paired steps read the same logits.
    scored = [
        {fold: rows_to_logits(rows, mode) for fold, rows in sorted(run.held.items())} for run in ordered
    ]
    points = []
    for run, folds in zip(ordered, scored, strict=True):
        for fold, scores in folds.items():
            mine = np.array([r.source == source for r in scores.records])
            labels, logits = scores.labels[mine], scores.logits[mine]

            def auc_of(w: np.ndarray, y: np.ndarray = labels, s: np.ndarray = logits) -> float:
                return roc_auc(y, s, w)

            auc = bootstrap_interval(auc_of, scores.clusters[mine], labels, n_boot=n_boot)
            points.append({"run": run.name, "share": training_share(run, source), "fold": fold,
                           "images": int(mine.sum()), "auc": auc})  # fmt: skip
    steps = []
    for (larger, larger_folds), (smaller, smaller_folds) in itertools.pairwise(
        zip(ordered, scored, strict=True)
    ):
        for fold in sorted(set(larger_folds) & set(smaller_folds)):
            difference = paired_auc_difference(smaller_folds[fold], larger_folds[fold], source, n_boot=n_boot)
            steps.append({"fold": fold, "from": training_share(larger, source),
                          "to": training_share(smaller, source), "difference": difference})  # fmt: skip
    return {"source": source, "mode": mode, "points": points, "steps": steps}


def compare(
    baseline: Experiment, runs: Sequence[Experiment], mode: str, *, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """Every run (the baseline first) on every fold it shares with the baseline."""
    base_recipe = full_recipe(baseline.summary["recipe"])
    out: dict[str, Any] = {"mode": mode, "baseline": baseline.name, "experiments": []}
    for run in [baseline, *runs]:
        folds = sorted(set(run.held) & set(baseline.held))
        out["experiments"].append(
            {
                "name": run.name,
                "path": str(run.path),
                "changes": run_changes(run, baseline, base_recipe),
                "folds": {str(k): fold_figures(run, baseline, k, mode, n_boot=n_boot) for k in folds},
            }
        )
        if len(folds) > 1:
            pooled = pooled_figures(run, baseline, folds, mode, n_boot=n_boot)
            out["experiments"][-1]["folds"][POOLED] = pooled
    if len(baseline.held) > 1:
        out["recalibration"] = recalibration_screen(baseline, mode)
    return out


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, dict):
        return _f(value.get("value"), digits)
    return f"{value:.{digits}f}"


def _fold_label(fold: str) -> str:
    """Folds are shown numbered from 1; the pooled row as ``all``."""
    return "**all**" if fold == POOLED else str(int(fold) + 1)


def _delta(d: dict[str, float] | None) -> str:
    if not d:
        return "–"
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def render(result: dict[str, Any]) -> str:
    rows = [
        "# Recipe experiments (grouped cross-validation)",
        "",
        f"Every run below trained on the same grouped folds of train + val (seed 0, whole clusters per fold, "
        f"clusters over 40 images always train) and kept its last epoch; TTA **{result['mode']}**; folds are "
        "numbered from 1 (fold 1 is `oof-fold0.csv`); **all** pools the held-out parts of every fold a run "
        "shares with the baseline (each image once, scored by the model that did not train on it; "
        "calibration and points fitted on all of them, as a release from those logits would; pointing "
        "averaged over folds). "
        f"Differences are paired against `{result['baseline']}` on the same held-out images, with 95 % "
        "cluster-bootstrap intervals. Calibration and both operating points are fitted on each fold's "
        "held-out part (per cluster, as a release fits them); the Doubt and one-band shares under "
        "*cross-validated* are on that same part. The *test* table applies that fold's calibration and "
        "points to the fold model's test logits: shown, never chosen on. Built by "
        "`python -m classifier.experiments`.",
        "",
        "## Cross-validated",
        "",
        "| experiment | changes | fold | min | Kaggle AUC image / cluster | FracAtlas AUC (no hardware) "
        "| Δ Kaggle AUC | Δ FracAtlas AUC | Doubt Kaggle / FracAtlas | Kaggle one band "
        "| pointing FracAtlas / boxes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def deltas(name: str, figures: dict[str, Any], source: str) -> str:
        return "baseline" if name == result["baseline"] else _delta(figures["vs_baseline"].get(source))

    for e in result["experiments"]:
        for fold, f in e["folds"].items():
            a, b, loc = f["auc"], f["bands"], f["localisation"]
            rows.append(
                f"| {e['name']} | {e['changes']} | {_fold_label(fold)} | {f['minutes']:.0f} "
                f"| {_f(a.get('kaggle_auc'))} / {_f(a.get('kaggle_cluster_auc'))} "
                f"| {_f(a.get('fracatlas_auc'))} ({_f(a.get('fracatlas_auc_no_hardware'))}) "
                f"| {deltas(e['name'], f, 'kaggle')} | {deltas(e['name'], f, 'fracatlas')} "
                f"| {_f(b.get('kaggle', {}).get('doubt_share'), 2)} / "
                f"{_f(b.get('fracatlas', {}).get('doubt_share'), 2)} "
                f"| {_f(b.get('kaggle', {}).get('one_band'), 2)} "
                f"| {_f(loc.get('fracatlas_pointing'), 2)} / {_f(loc.get('boxes_pointing'), 2)} |"
            )
    rows += [
        "",
        "## Test (the fold models, read after the fact)",
        "",
        "| experiment | fold | source | AUC image [95 % CI] / cluster | no hardware | sensitive: sens / spec "
        "| specific: sens / spec | Doubt | ECE | one band | pointing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["experiments"]:
        for fold, f in e["folds"].items():
            for source, t in f.get("test", {}).items():
                auc = t["auc"]
                pointing = f.get("test_localisation", {}).get(f"{source}_pointing")
                rows.append(
                    f"| {e['name']} | {int(fold) + 1} | {source} "
                    f"| {_f(auc)} [{_f(auc['low'])}, {_f(auc['high'])}] / {_f(t['cluster_auc'])} "
                    f"| {_f(t.get('auc_no_hardware'))} "
                    f"| {_f(t['sensitive']['sensitivity'], 2)} / {_f(t['sensitive']['specificity'], 2)} "
                    f"| {_f(t['specific']['sensitivity'], 2)} / {_f(t['specific']['specificity'], 2)} "
                    f"| {_f(t['doubt_share'], 2)} | {_f(t['ece'])} | {_f(t.get('one_band'), 2)} "
                    f"| {_f(pointing, 2)} |"
                )
            boxes = f.get("test_localisation", {}).get("boxes_pointing")
            if boxes is not None:
                label = f"| {e['name']} | {int(fold) + 1} | boxes (positives only) |"
                rows.append(f"{label}{' – |' * 7} {_f(boxes, 2)} |")
    if result.get("recalibration"):
        rows += render_recalibration(result["recalibration"], result["baseline"])
    return "\n".join(rows) + "\n"


def render_recalibration(screen: list[dict[str, Any]], baseline: str) -> list[str]:
    sources = [k for k in screen[0] if k not in ("method", "cluster_power")]
    rows = [
        "",
        f"## Recalibration of `{baseline}`'s logits (cross-fitted over its folds)",
        "",
        "Each calibration map is fitted on the other folds' held-out logits and applied to this fold's; "
        "images weigh 1 / (cluster size) ^ power. A release fits Platt with power 1. ECE per image / per "
        "cluster.",
        "",
        "| calibration | cluster power | " + " | ".join(f"{s} ECE image / cluster" for s in sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for row in screen:
        cells = " | ".join(f"{_f(row[s]['ece'])} / {_f(row[s]['cluster_ece'])}" for s in sources)
        rows.append(f"| {row['method']} | {row['cluster_power']:g} | {cells} |")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m classifier.experiments", description=__doc__.split("\n")[0])
    p.add_argument("--baseline", required=True, help="[NAME=]FOLDER: the run others pair with")
    p.add_argument("--run", action="append", default=[], help="[NAME=]FOLDER: a CV run (repeatable)")
    p.add_argument(
        "--ensemble",
        action="append",
        default=[],
        help="NAME=FOLDER:TTA+FOLDER:TTA...: the mean of runs' logits, compared as one run (repeatable)",
    )
    p.add_argument("--mode", default="flip", help="the TTA mode whose logits are compared")
    p.add_argument("--n-boot", type=int, default=N_BOOT)
    p.add_argument("--notes", type=Path, default=None, help="markdown appended to experiments.md")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    baseline = read_experiment(args.baseline)
    runs = [read_experiment(path) for path in args.run]
    runs += [ensemble_experiment(spec, args.mode) for spec in args.ensemble]
    result = compare(baseline, runs, args.mode, n_boot=args.n_boot)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiments.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    if args.notes is not None:
        text += "\n" + args.notes.read_text()
    (args.out / "experiments.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
