"""Write a shipped model's ``report.md``: its test figures, the baselines beside it, every experiment.

    python -m classifier.report --model models/lite0-cam-v1 \
        --compare "linear probe=classifier_runs/probe-224/eval-test" --compare "seed=..." \
        --cv "R0 standard aug, 224 px=classifier_runs/cv-r0-std224" --notes classifier_runs/notes.md

Reads the ``metrics.json`` written by ``classifier.evaluate`` for the shipped model (``MODEL/eval-test``)
and every comparison, and the ``cv_summary.json`` of every cross-validated recipe; copies their plots
into ``MODEL/figures/`` and writes ``MODEL/report.md``. Hand-written findings come from ``--notes``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from classifier.card import read_card

GOALS = [
    # (label, source, path into metrics, comparison, target)
    ("Kaggle test ROC-AUC per image", "kaggle", ("images", "auc"), ">=", 0.95),
    ("Kaggle test ROC-AUC per cluster", "kaggle", ("clusters", "auc"), ">=", 0.98),
    ("FracAtlas test ROC-AUC", "fracatlas", ("images", "auc"), ">=", 0.93),
    ("FracAtlas test ROC-AUC without hardware", "fracatlas", ("no_hardware", "images", "auc"), ">=", 0.92),
    ("Kaggle sensitivity per cluster at the threshold", "kaggle", ("clusters", "sensitivity"), ">=", 0.95),
    ("Kaggle specificity per cluster at the threshold", "kaggle", ("clusters", "specificity"), ">=", 0.85),
    (
        "FracAtlas sensitivity per cluster at the threshold",
        "fracatlas",
        ("clusters", "sensitivity"),
        ">=",
        0.95,
    ),
    (
        "FracAtlas specificity per cluster at the threshold",
        "fracatlas",
        ("clusters", "specificity"),
        ">=",
        0.85,
    ),
    ("Kaggle expected calibration error (images)", "kaggle", ("images", "ece"), "<=", 0.05),
    ("FracAtlas expected calibration error (images)", "fracatlas", ("images", "ece"), "<=", 0.05),
    (
        "Kaggle multi-image clusters with one verdict",
        "kaggle",
        ("consistency", "share_one_verdict"),
        ">=",
        0.95,
    ),
    ("Pointing game on fractured FracAtlas test images", "fracatlas", ("pointing_game", "share"), ">=", 0.70),
]


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(level: dict[str, Any] | None, key: str = "auc") -> str:
    if not level:
        return "–"
    value = level.get(key)
    ci = level.get(f"{key}_ci")
    if ci:
        return f"{_f(value)} ({_f(ci['low'])}–{_f(ci['high'])})"
    return _f(value)


def load_metrics(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    return json.loads(path.read_text())


def goals_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| goal | target | measured on test | met |", "|---|---|---|---|"]
    for label, source, path, op, target in GOALS:
        value = _get(metrics.get("sources", {}).get(source, {}), path)
        met = "–"
        if isinstance(value, int | float) and not math.isnan(value):
            met = "yes" if (value >= target if op == ">=" else value <= target) else "**no**"
        lines.append(f"| {label} | {op} {target} | {_f(value)} | {met} |")
    return lines


def source_tables(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for source, report in metrics["sources"].items():
        lines += [f"### {source}", ""]
        lines += [
            "| level | n | ROC-AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) | precision "
            "| F1 | accuracy | ECE | TP / FP / TN / FN |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = [("images", report["images"]), ("clusters", report["clusters"])]
        if "no_hardware" in report:
            rows += [
                ("images without hardware", report["no_hardware"]["images"]),
                ("clusters without hardware", report["no_hardware"]["clusters"]),
            ]
        for name, m in rows:
            lines.append(
                f"| {name} | {m['n']} | {_ci(m)} | {_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | "
                f"{_f(m['precision'])} | {_f(m['f1'])} | {_f(m['accuracy'])} | {_f(m['ece'])} | "
                f"{m['tp']} / {m['fp']} / {m['tn']} / {m['fn']} |"
            )
        c = report["consistency"]
        if c.get("multi_image_clusters"):
            lines += [
                "",
                f"One verdict for all images of {_f(c['share_one_verdict'])} of the "
                f"{c['multi_image_clusters']} multi-image clusters.",
            ]
        if "pointing_game" in report:
            p = report["pointing_game"]
            ci = p.get("ci", {})
            lines += [
                "",
                f"Pointing game: the heatmap peak falls inside a fracture box on {_f(p['share'])} "
                f"(95 % Wilson CI {_f(ci.get('low'))}–{_f(ci.get('high'))}) of {p['images']} fractured "
                "images; "
                f"{_f(p.get('share_tolerance_0.05'))} with a tolerance of 5 % of the image side; "
                f"{_f(p.get('share_no_hardware'))} on those without hardware.",
            ]
        if report.get("regions"):
            lines += ["", "| region | images | fractured | ROC-AUC |", "|---|---|---|---|"]
            for region, r in report["regions"].items():
                lines.append(f"| {region} | {r['images']} | {r['fractured']} | {_f(r['auc'])} |")
        lines.append("")
    return lines


def comparison_table(entries: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model | Kaggle AUC per image | Kaggle AUC per cluster | FracAtlas AUC | FracAtlas AUC no "
        "hardware | Kaggle one-verdict clusters | pointing game |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, metrics in entries.items():
        s = metrics.get("sources", {})
        k, f = s.get("kaggle", s.get("kaggle_original", {})), s.get("fracatlas", {})
        lines.append(
            f"| {name} | {_ci(k.get('images'))} | {_ci(k.get('clusters'))} | {_ci(f.get('images'))} | "
            f"{_ci(_get(f, ('no_hardware', 'images')))} | "
            f"{_f(_get(k, ('consistency', 'share_one_verdict')))} | "
            f"{_f(_get(f, ('pointing_game', 'share')))} |"
        )
    return lines


def cv_table(runs: dict[str, Path]) -> list[str]:
    lines = [
        "| recipe | TTA | Kaggle AUC image | Kaggle AUC cluster | Kaggle one-verdict | FracAtlas AUC | "
        "FracAtlas no hw | score | minutes / fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, path in runs.items():
        summary_path = Path(path) / "cv_summary.json"
        if not summary_path.exists():
            lines.append(f"| {name} | – | (not run) | | | | | | |")
            continue
        summary = json.loads(summary_path.read_text())
        if "oof" not in summary:  # the linear probe's C search
            best = summary["cv"][str(summary["C"])]
            lines.append(_cv_row(name + f" (C={summary['C']})", "flip", best, None))
            continue
        seconds = summary.get("seconds_per_fold", {})
        minutes = sum(seconds.values()) / max(1, len(seconds)) / 60 if seconds else None
        folds = f" [{len(summary.get('folds_run', []))}/{summary.get('folds')} folds]"
        for tta, m in summary["oof"].items():
            lines.append(_cv_row(name + folds, tta, m, minutes))
    return lines


def _cv_row(name: str, tta: str, m: dict[str, Any], minutes: float | None) -> str:
    return (
        f"| {name} | {tta} | {_f(m.get('kaggle_auc'))} | {_f(m.get('kaggle_cluster_auc'))} | "
        f"{_f(m.get('kaggle_consistency'))} | {_f(m.get('fracatlas_auc'))} | "
        f"{_f(m.get('fracatlas_auc_no_hardware'))} | {_f(m.get('score'))} | {_f(minutes, 1)} |"
    )


def write_report(
    model_dir: Path,
    *,
    compare: dict[str, Path],
    cv_runs: dict[str, Path],
    notes: Path | None,
    eval_dir: Path | None = None,
) -> Path:
    model_dir = Path(model_dir)
    card = read_card(model_dir / "card.json")
    eval_dir = eval_dir or model_dir / "eval-test"
    metrics = load_metrics(eval_dir)
    figures = model_dir / "figures"
    figures.mkdir(exist_ok=True)
    for name in ("roc.png", "reliability.png", "pointing-fracatlas.png"):
        if (eval_dir / name).exists():
            shutil.copy(eval_dir / name, figures / name)
    if (model_dir / "curves.png").exists():
        shutil.copy(model_dir / "curves.png", figures / "curves.png")
    compared = {f"**{card['version']} (shipped)**": metrics}
    for name, path in compare.items():
        compared[name] = load_metrics(path)
        slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
        roc = Path(path) / "roc.png" if Path(path).is_dir() else Path(path).parent / "roc.png"
        if roc.exists():
            shutil.copy(roc, figures / f"roc-{slug}.png")

    training = card.get("training", {})
    recipe = training.get("recipe", {})
    lines = [f"# Model report: `{card['version']}`", ""]
    lines += [
        f"Created {card.get('created', '?')}. Architecture: {card['architecture'].get('description', '')}; "
        f"input {card['input']['size']} px letterboxed grey"
        + (" with CLAHE" if card["input"].get("clahe") else "")
        + f"; test-time augmentation: {card['architecture'].get('tta')}. "
        f"Calibration: {card['calibration'].get('method')} (a = {_f(card['calibration'].get('a'))}, "
        f"b = {_f(card['calibration'].get('b'))}), fitted on "
        f"{card.get('threshold_rule', {}).get('fitted_on', '?')}; "
        f"operating threshold {card['threshold']:.4f} "
        f"({card.get('threshold_rule', {}).get('rule', '')}, target sensitivity "
        f"{card.get('threshold_rule', {}).get('target_sensitivity', '?')}).",
        "",
    ]
    if training:
        lines += [
            f"Trained in {_f(training.get('seconds', 0) / 60, 1)} minutes on {training.get('machine', '?')}, "
            f"best validation epoch {training.get('best_epoch')} of {recipe.get('epochs')}; "
            f"training data fingerprint `{card.get('training_data', {}).get('fingerprint', '?')[:16]}…`.",
            "",
        ]
    lines += ["## Goals (issue 9) on the test splits", "", *goals_table(metrics), ""]
    if notes and Path(notes).exists():
        lines += [Path(notes).read_text().strip(), ""]
    lines += ["## Test figures per source", "", *source_tables(metrics)]
    lines += [
        "![ROC](figures/roc.png) ![reliability](figures/reliability.png)",
        "",
        "![pointing game examples](figures/pointing-fracatlas.png)",
        "",
    ]
    if (figures / "curves.png").exists():
        lines += ["![training curves](figures/curves.png)", ""]
    lines += ["## Comparison on the test splits (95 % cluster-bootstrap intervals)", ""]
    lines += [*comparison_table(compared), ""]
    lines += [f"![ROC {p.stem}](figures/{p.name})" for p in sorted(figures.glob("roc-*.png"))] + [""]
    if cv_runs:
        lines += [
            "## Every experiment: grouped cross-validation over train + val",
            "",
            "Out-of-fold figures pooled over the folds (clusters of more than 40 images always train, "
            "as in the curated split); the score is the mean of the Kaggle image and cluster AUCs and the "
            "FracAtlas AUCs with and without hardware. None of them uses the test split.",
            "",
        ]
        lines += [*cv_table(cv_runs), ""]
    lines += ["## Recipe of the shipped model", "", "```json", json.dumps(recipe, indent=1), "```", ""]
    path = model_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _pairs(values: list[str]) -> dict[str, Path]:
    out = {}
    for value in values:
        name, _, path = value.rpartition("=")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--eval", type=Path, default=None, help="the shipped model's evaluation folder")
    p.add_argument("--compare", action="append", default=[], help="NAME=EVAL_DIR (repeatable)")
    p.add_argument("--cv", action="append", default=[], help="NAME=CV_RUN_DIR (repeatable)")
    p.add_argument("--notes", type=Path, default=None)
    args = p.parse_args(argv)
    path = write_report(
        args.model,
        compare=_pairs(args.compare),
        cv_runs=_pairs(args.cv),
        notes=args.notes,
        eval_dir=args.eval,
    )
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
