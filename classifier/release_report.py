"""The released model's ``report.md``: the goals table (beside the previous model's figures), how the
figures were obtained, per source, localisation and the test-time augmentation chosen, all read from the
card that ``classifier.release`` writes (a report can be rewritten from a card alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from classifier.cells import BoxRule


def fmt(value: Any, digits: int = 3) -> str:
    """A figure to ``digits`` decimals; a dash where it is not measurable (None / NaN)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def at_least(value: float | None, bound: float | None) -> bool:
    """value >= bound, False when either is not measurable (None / NaN)."""
    if value is None or bound is None or not (np.isfinite(value) and np.isfinite(bound)):
        return False
    return value >= bound


def _ci_text(ci: dict[str, float]) -> str:
    return f"{fmt(ci['value'])} ({fmt(ci['low'])}–{fmt(ci['high'])})"


def _value(figure: Any) -> Any:
    """A figure as v2 cards keep it ({"value", "low", "high"}) or as v1 cards did (a bare number)."""
    return figure.get("value") if isinstance(figure, dict) else figure


def _met(flag: bool) -> str:
    return "met" if flag else "**not met**"


def goal_figures(card: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Each goal row's (figure text, met or not) for one card's test figures.

    A v2 card (two operating points, bands, localisation) fills every row; a v1 card (one threshold) the
    rows it has a figure for, the sensitive threshold's row from its one threshold.
    """
    test = card.get("metrics", {}).get("test", {})
    sources, loc = test.get("sources", {}), test.get("localisation", {})
    k, f = sources.get("kaggle", {}), sources.get("fracatlas", {})
    out: dict[str, tuple[str, str | None]] = {}
    if not k or not f:
        return out
    kai, kac = _value(k["images"]["auc"]), _value(k["clusters"]["auc"])
    out["kaggle_auc"] = (f"{fmt(kai)} / {fmt(kac)}", _met(at_least(kai, 0.97) and at_least(kac, 0.98)))
    fa = _value(f["images"]["auc"])
    fnh = _value(((f.get("no_hardware") or {}).get("images") or {}).get("auc"))
    out["fracatlas_auc"] = (f"{fmt(fa)} ({fmt(fnh)})", _met(at_least(fa, 0.93) and at_least(fnh, 0.92)))
    v2 = "specific" in k["images"]
    for name, src in (("kaggle", k), ("fracatlas", f)):
        if v2:
            for point, (on, other) in (("specific", (0.95, 0.70)), ("sensitive", (0.95, 0.60))):
                p = src["images"][point]
                sens, spec = _value(p["sensitivity"]), _value(p["specificity"])
                ok = (
                    at_least(spec, on) and at_least(sens, other)
                    if point == "specific"
                    else (at_least(sens, on) and at_least(spec, other))
                )
                out[f"{name}_{point}"] = (f"sens {fmt(sens, 2)} / spec {fmt(spec, 2)}", _met(ok))
            doubt = src["images"]["bands"]["doubt"]["share"]
            out[f"{name}_doubt"] = (fmt(doubt, 2), _met(at_least(0.25, doubt)))
        else:
            sens, spec = src["images"]["sensitivity"], src["images"]["specificity"]
            out[f"{name}_sensitive"] = (f"sens {fmt(sens, 2)} / spec {fmt(spec, 2)}", None)
        ece = src["images"]["ece"]
        out[f"{name}_ece"] = (fmt(ece), _met(at_least(0.05, ece)))
    consistency = k.get("consistency") or {}
    if v2:
        one = consistency.get("share_one_band")
        out["one_band"] = (fmt(one, 2), _met(at_least(one, 0.95)))
        out["one_call"] = (fmt(consistency.get("share_one_call_at_sensitive"), 2), None)
    else:
        out["one_call"] = (fmt(consistency.get("share_one_verdict"), 2), None)
        pointing = (f.get("pointing_game") or {}).get("share")
        if pointing is not None:
            out["fracatlas_pointing"] = (fmt(pointing), _met(at_least(pointing, 0.70)))
    for key in ("fracatlas", "boxes"):
        if key in loc:
            pg = loc[key]["pointing_game"]["share"]
            out[f"{key}_pointing"] = (fmt(pg), _met(at_least(pg, 0.70)))
            fr = loc[key]["froc"]["at_0.5_fp_per_image"]["sensitivity"]
            out[f"{key}_froc"] = (fmt(fr), _met(at_least(fr, 0.70)))
    return out


GOAL_ROWS = (
    ("kaggle_auc", "Kaggle ROC-AUC per image / per cluster", "≥ 0.97 / ≥ 0.98"),
    ("fracatlas_auc", "FracAtlas ROC-AUC (without hardware)", "≥ 0.93 (≥ 0.92)"),
    ("kaggle_specific", "Kaggle: at the specific threshold (images)", "spec ≥ 0.95, sens ≥ 0.70"),
    ("kaggle_sensitive", "Kaggle: at the sensitive threshold (images)", "sens ≥ 0.95, spec ≥ 0.60"),
    ("fracatlas_specific", "FracAtlas: at the specific threshold (images)", "spec ≥ 0.95, sens ≥ 0.70"),
    ("fracatlas_sensitive", "FracAtlas: at the sensitive threshold (images)", "sens ≥ 0.95, spec ≥ 0.60"),
    ("kaggle_doubt", "Kaggle: images in the Doubt band", "≤ 25 %"),
    ("fracatlas_doubt", "FracAtlas: images in the Doubt band", "≤ 25 %"),
    ("kaggle_ece", "Kaggle: ECE (images)", "≤ 0.05"),
    ("fracatlas_ece", "FracAtlas: ECE (images)", "≤ 0.05"),
    ("one_band", "Kaggle multi-image clusters with one band", "≥ 0.95"),
    (
        "one_call",
        "Kaggle multi-image clusters with one call at the sensitive threshold (the old figure's kind)",
        "–",
    ),
    ("fracatlas_pointing", "pointing game, FracAtlas test", "≥ 0.70"),
    ("fracatlas_froc", "fracture sensitivity at 0.5 FP boxes / image, FracAtlas test", "≥ 0.70"),
    ("boxes_pointing", "pointing game, boxes source test", "≥ 0.70"),
    ("boxes_froc", "fracture sensitivity at 0.5 FP boxes / image, boxes source test", "≥ 0.70"),
)


def goals_rows(card: dict[str, Any], compared: list[dict[str, Any]]) -> list[str]:
    """The goals table: each earlier model's test figures, the goal, this model's and whether it is met."""
    mine = goal_figures(card)
    theirs = [goal_figures(c) for c in compared]
    names = " | ".join(f"`{c['version']}`" for c in compared)
    rows = [
        f"| figure | {names + ' | ' if names else ''}goal | this model | |",
        "|---|" + "---|" * len(compared) + "---|---|---|",
    ]
    for key, label, goal in GOAL_ROWS:
        text, met = mine.get(key, ("–", None))
        old = "".join(f"{t.get(key, ('–', None))[0]} | " for t in theirs)
        rows.append(f"| {label} | {old}{goal} | {text} | {met or ''} |")
    return rows


def source_rows(name: str, src: dict[str, Any]) -> list[str]:
    rows = [
        f"### {name}",
        "",
        "| level | n (fractured) | ROC-AUC (95 % CI) | sensitive: sensitivity | sensitive: specificity "
        "| specific: sensitivity | specific: specificity | No fracture / Doubt / Fracture | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    levels = [("images", src["images"]), ("clusters", src["clusters"])]
    if "no_hardware" in src:
        levels.append(("images without hardware", src["no_hardware"]["images"]))
    for level, m in levels:
        b = m["bands"]
        rows.append(
            f"| {level} | {m['n']} ({m['positives']}) | {_ci_text(m['auc'])} "
            f"| {_ci_text(m['sensitive']['sensitivity'])} | {_ci_text(m['sensitive']['specificity'])} "
            f"| {_ci_text(m['specific']['sensitivity'])} | {_ci_text(m['specific']['specificity'])} "
            f"| {b['no_fracture']['share']:.0%} / {b['doubt']['share']:.0%} / {b['fracture']['share']:.0%} "
            f"| {fmt(m['ece'])} |"
        )
    rows.append("")
    for level, m in levels[:1]:
        for point in ("sensitive", "specific"):
            p = m[point]
            c = p["confusion"]
            rows.append(
                f"- {level}, {point} threshold {p['threshold']:.3f}: accuracy {fmt(p['accuracy'])}, "
                f"precision {fmt(p['precision'])}, F1 {fmt(p['f1'])}; confusion TP {c['tp']} FP {c['fp']} "
                f"TN {c['tn']} FN {c['fn']}"
            )
    if "consistency" in src:
        c = src["consistency"]
        rows.append(
            f"- one call at the sensitive threshold (fracture or doubt vs no fracture) for every image of a "
            f"multi-image cluster: {c['share_one_call_at_sensitive']:.0%}"
        )
        rows.append(
            f"- one band for every image of a multi-image cluster: {c['share_one_band']:.0%} of "
            f"{c['multi_image_clusters']} clusters"
        )
    if "regions" in src:
        parts = [f"{r} {fmt(v['auc'])} ({v['images']} images)" for r, v in src["regions"].items()]
        rows.append("- ROC-AUC per body region: " + "; ".join(parts))
    rows.append("")
    return rows


def served_at(card: dict[str, Any]) -> str:
    """How the serving size was chosen, when the weights trained at another size (empty otherwise)."""
    trained = card["training"].get("input_size")
    if not trained or int(trained) == int(card["input"]["size"]):
        return ""
    choice = card.get("input_size_choice")
    if not choice:
        return f" (trained at {trained} px)"
    scores = ", ".join(
        f"{size} px {row['auc_score']:.3f} "
        f"({row['latency_ms_batch1']:.0f} ms, {row['radiographs_per_s']:.1f}/s)"
        for size, row in choice["candidates"].items()
    )
    return (
        f" (trained at {trained} px; served at {choice['chosen']} px by {choice['rule']}: "
        f"mean val AUC {scores})"
    )


def trained_splits(card: dict[str, Any]) -> str:
    """Which splits the weights learnt from, as the report's data paragraph says it."""
    splits = (card.get("training_data") or {}).get("splits_trained_on", ["train"])
    named = " + ".join(f"`{s}`" for s in splits)
    return named + (" (a final fit: no val held out)" if "val" in splits else "")


def released_on_val(ece: dict[str, float] | None) -> str:
    """The released weights' val ECE under the calibration, or why there is none (a final fit)."""
    if ece is None:
        return "; the released weights trained on val, so there is no held-out val check of it"
    return "; the released weights on val under it: " + ", ".join(f"{s} {fmt(v)}" for s, v in ece.items())


def box_fitted_on(card: dict[str, Any]) -> str:
    """Where the box rule was chosen: val, or val by the release it was carried over from."""
    carried = (card.get("boxes") or {}).get("carried_from")
    return f"val by {carried}, carried over" if carried else "val"


def ood_threshold_on(ood: dict[str, Any]) -> str:
    """Where the OOD threshold's quantile was taken."""
    return "val, in-sample (the weights trained on val)" if ood.get("threshold_in_sample") else "val"


def write_report(card: dict[str, Any], out: Path, *, compared: list[dict[str, Any]], notes: str) -> Path:
    test = card["metrics"]["test"]
    points = card["operating_points"]
    fitted_on = points.get("fitted_on", "val")
    fitted_ece = (
        card["calibration_check"].get("fitted_ece_per_source")
        or card["calibration_check"]["val_ece_per_source"]
    )
    lines = [
        f"# {card['version']}: evaluation report",
        "",
        f"{card['architecture']['description']}. Input {card['input']['size']} px"
        f"{served_at(card)}, test-time augmentation `{card['architecture']['tta']}` inside the graph. "
        "Written by `python -m classifier.release` (see `reproduce.sh`).",
        "",
        "## Goals (test splits)",
        "",
        *goals_rows(card, compared),
        "",
        "## How these figures were obtained",
        "",
        "- **Data**: the three sources in `../shared/datasets/`, split as their manifests say. Training used "
        f"every source's {trained_splits(card)}; the image head learnt from the two sources with both "
        "classes (Kaggle, FracAtlas), the cell head from every image with boxes (FracAtlas, the boxes "
        "source) and every normal radiograph. Nothing of `test` was used before this report.",
        f"- **Calibration** (Platt, weights 1 / cluster size, on the {fitted_on} of Kaggle + FracAtlas): "
        f"a = {card['calibration']['a']:.3f}, b = {card['calibration']['b']:.3f} (unweighted it would be a = "
        f"{card['calibration_check']['unweighted_platt']['a']:.3f}). ECE where it was fitted: "
        + ", ".join(f"{s} {fmt(v)}" for s, v in fitted_ece.items())
        + released_on_val(card["calibration_check"]["val_ece_per_source"])
        + ".",
        f"- **Operating points** on the clusters of the {fitted_on}: sensitive = {points['sensitive']:.3f} "
        f"(sensitivity ≥ 0.95 on every source), specific = {points['specific']:.3f} (specificity ≥ 0.95 "
        "on every source). Bands: "
        "**Fracture** at or above the specific threshold, **Doubt** between, **No fracture** below the "
        f"sensitive one. Per source on the {fitted_on}: "
        + "; ".join(
            f"{s}: {v['sensitive']:.3f} / {v['specific']:.3f} ({v['clusters']} clusters)"
            for s, v in points["per_source"].items()
        )
        + ".",
        f"- **Boxes**: {BoxRule.from_card(card).describe()} (the threshold and the grouping chosen on "
        f"FracAtlas {box_fitted_on(card)}: the most fractures found at no more than 0.5 false-positive boxes "
        "per image). A box "
        "*finds* a fracture when it overlaps it by IoU ≥ 0.1 or its centre lies inside it; the pointing game "
        "asks whether the best cell's centre lies inside a true box.",
        "- **Intervals**: 95 % percentile intervals from bootstrap resamples of whole clusters (stratified "
        "by "
        "label); Wilson intervals for the pointing game. Per cluster: the mean probability of its images.",
        f"- **Out-of-distribution check**: Mahalanobis distance of the pooled backbone features in the top "
        f"{len(card['ood'].get('variances', []))} principal components of the training images', threshold "
        f"{card['ood']['threshold']:.3f} = the 99th percentile "
        f"on {ood_threshold_on(card['ood'])}; it flags {card['ood']['test_flag_rate']:.1%} of the test "
        "radiographs." + colour_sentence(card["ood"].get("colour")),
        "",
        "## Per source",
        "",
    ]
    for name in sorted(test["sources"]):
        lines += source_rows(name, test["sources"][name])
    lines += [
        "## Localisation",
        "",
        "| test set | images with boxes | pointing game (95 % CI) | without hardware "
        "| FROC: fractures found at 0.5 / 1 FP per image | at the shipped box threshold |",
        "|---|---|---|---|---|---|",
    ]
    for name, loc in test["localisation"].items():
        pg = loc["pointing_game"]
        fr = loc["froc"]
        at = loc["at_box_threshold"]
        lines.append(
            f"| {name} | {loc['images_with_boxes']} | {fmt(pg['share'])} ({fmt(pg['ci']['low'])}–"
            f"{fmt(pg['ci']['high'])}) | {fmt(pg['share_no_hardware'])} ({pg['images_no_hardware']}) "
            f"| {fmt(fr['at_0.5_fp_per_image']['sensitivity'])} / "
            f"{fmt(fr['at_1_fp_per_image']['sensitivity'])} "
            f"| {at['sensitivity']:.2f} of {at['fractures']} fractures, {at['fp_per_image']:.2f} FP / image |"
        )
    lines += cross_validation_rows(card.get("cross_validation"))
    choice = card.get("tta_choice")
    if choice:
        on = choice.get("scored_on", "val")
        lines += [
            "",
            f"## Test-time augmentation, chosen on the {on}",
            "",
            f"Rule: {choice['rule']}. Chosen: **{choice['chosen']}**.",
            "",
            "| mode | mean AUC | Kaggle multi-image clusters with one band | logit spread within them "
            "| batch-1 forward pass (ms) | forward pass at batch 16 (radiographs/s) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {mode} | {fmt(r['auc_score'])} | {fmt(r['kaggle_one_band'])} "
                f"({r['kaggle_multi_image_clusters']}) | {fmt(r['kaggle_logit_spread'])} "
                f"| {r['latency_ms_batch1']:.0f} | {r['radiographs_per_s']:.1f} |"
                for mode, r in choice["candidates"].items()
            ),
        ]
    lines += [
        "",
        "![ROC](figures/roc.png) ![Reliability](figures/reliability.png) ![FROC](figures/froc.png)",
        "",
        "![Boxes on FracAtlas test](figures/boxes-fracatlas.png)",
        "",
        "![Boxes on the boxes source's test](figures/boxes-boxes.png)",
        "",
        "![Training curves](figures/curves.png)",
        "",
        notes.strip(),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def cross_validation_rows(cv: dict[str, Any] | None) -> list[str]:
    """The grouped cross-validation the calibration, operating points and TTA were fitted on."""
    if not cv:
        return []
    held = "; ".join(
        f"{s}: {v['images']} images in {v['clusters']} clusters" for s, v in cv["held_out"].items()
    )
    minutes = ", ".join(f"{float(v) / 60:.0f}" for v in cv["seconds_per_fold"].values())
    rows = [
        "",
        f"## Grouped cross-validation ({cv['folds']} folds over train + val)",
        "",
        f"{cv['design']}. Held out once each: {held}. Training minutes per fold: {minutes}. Out-of-fold "
        "ROC-AUC of the fold models (not the released weights) per TTA mode, per fold and pooled:",
        "",
        "| TTA | fold | Kaggle per image | Kaggle per cluster | FracAtlas | FracAtlas without hardware "
        "| mean (the score) |",
        "|---|---|---|---|---|---|---|",
    ]
    parts = [(k.removeprefix("fold"), v) for k, v in sorted(cv["per_fold"].items())]
    for mode, pooled in cv["pooled"].items():
        for fold, figures in [*((k, v[mode]) for k, v in parts if mode in v), ("pooled", pooled)]:
            rows.append(
                f"| {mode} | {fold} | {fmt(figures.get('kaggle_auc'))} "
                f"| {fmt(figures.get('kaggle_cluster_auc'))} "
                f"| {fmt(figures.get('fracatlas_auc'))} | {fmt(figures.get('fracatlas_auc_no_hardware'))} "
                f"| {fmt(figures.get('score'))} |"
            )
    return rows


def colour_sentence(colour: dict[str, Any] | None) -> str:
    if not colour:
        return ""
    return (
        f" A colour check comes first: an image with more than {colour['threshold']:.0%} of its pixels "
        f"clearly coloured is not analysed (the most coloured val radiograph: {colour['val_max']:.1%}; "
        f"flagged: {colour['in_distribution_flag_rate']:.1%} of val, {colour['test_flag_rate']:.1%} of test)."
    )
