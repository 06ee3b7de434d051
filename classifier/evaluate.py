"""Evaluate a model artifact; fit its calibration and operating threshold on validation data; write its card.

    python -m classifier.evaluate --model classifier_runs/lite0-224 \
        --data ../shared/datasets/bone-fracture-xray --data ../shared/datasets/fracatlas --split test \
        --out classifier_runs/lite0-224/eval --write-card

1. Predicts the calibration split (``val`` by default) and fits Platt scaling on its logits, then the
   operating threshold: the highest one that reaches the target sensitivity (default 0.95) per cluster
   on every source's validation split. Test data never touch either.
2. Predicts ``--split`` and reports, per source, per image and per cluster (the mean probability of a
   cluster's images): ROC-AUC with a 95 % cluster-bootstrap interval, accuracy, sensitivity, specificity,
   precision, F1, confusion matrix, expected calibration error; FracAtlas also without orthopaedic
   hardware and per body region; the share of multi-image Kaggle clusters with one verdict for all their
   images; the pointing game (heatmap peak inside a fracture box) on fractured FracAtlas images.
3. Writes ``metrics.json``, ``predictions.csv``, ROC and reliability plots and, with ``--write-card``, the
   calibration, threshold and metrics into the artifact's ``card.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.card import CARD_FILE, calibrate, json_default, read_card, write_card
from classifier.data import (
    DEFAULT_CACHE,
    ImageSet,
    Record,
    load_images,
    load_kaggle_original_split,
    load_sources,
    select,
)
from classifier.explain import cam_to_heatmap, pointing_hit
from classifier.figures import plot_pointing_examples, plot_reliability, plot_roc
from classifier.metrics import (
    N_BOOT,
    binary_metrics,
    bootstrap_interval,
    cluster_consistency,
    cluster_means,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    region_aucs,
    reliability_bins,
    roc_auc,
    threshold_for_sensitivity,
    weighted_rates,
    wilson_interval,
)
from classifier.scoring import Scored, write_predictions

log = logging.getLogger("classifier.evaluate")


# -------------------------------------------------------------------------------------- calibration


def fit_calibration(logits: np.ndarray, labels: np.ndarray, method: str = "platt") -> dict[str, Any]:
    if method == "identity":
        return {"method": "identity"}
    if method == "temperature":
        return fit_temperature(logits, labels)
    return fit_platt(logits, labels)


def fit_threshold(
    records: Sequence[Record], probabilities: np.ndarray, *, target: float = 0.95
) -> tuple[float, dict[str, float]]:
    """The highest threshold reaching ``target`` sensitivity per cluster on every source.

    Per cluster: a cluster counts as detected when the mean probability of its images reaches the
    threshold (for FracAtlas clusters are mostly single images). Returns (threshold, per-source ones).
    """
    per_source = {}
    for source in sorted({r.source for r in records}):
        m = np.array([r.source == source for r in records])
        labels = np.array([r.label for r in records])[m]
        clusters = np.array([r.cluster for r in records])[m]
        _, cluster_labels, cluster_probs = cluster_means(clusters, labels, probabilities[m])
        if cluster_labels.sum() == 0:
            continue
        per_source[source] = threshold_for_sensitivity(cluster_labels, cluster_probs, target)
    if not per_source:
        raise ValueError("no fractured images to set a threshold on")
    return min(per_source.values()), per_source


# ------------------------------------------------------------------------------------------ metrics


def level_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    clusters: np.ndarray,
    threshold: float,
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    """Metrics on one level (images or clusters) with cluster-bootstrap intervals."""
    base = binary_metrics(labels, probabilities, threshold).as_dict()
    predicted = probabilities >= threshold
    out: dict[str, Any] = {**base}
    if len(set(labels.tolist())) == 2:

        def interval(statistic: Any) -> dict[str, float]:
            return bootstrap_interval(statistic, clusters, labels, n_boot=n_boot, seed=seed)

        out["auc_ci"] = interval(lambda w: roc_auc(labels, probabilities, w))
        out["sensitivity_ci"] = interval(lambda w: weighted_rates(labels, predicted, w)[0])
        out["specificity_ci"] = interval(lambda w: weighted_rates(labels, predicted, w)[1])
    out["ece"] = expected_calibration_error(labels, probabilities)
    out["reliability"] = reliability_bins(labels, probabilities)
    return out


def source_report(
    records: Sequence[Record],
    probabilities: np.ndarray,
    threshold: float,
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    labels = np.array([r.label for r in records])
    clusters = np.array([r.cluster for r in records])
    out: dict[str, Any] = {
        "images": level_metrics(labels, probabilities, clusters, threshold, seed=seed, n_boot=n_boot)
    }
    ids, cluster_labels, cluster_probs = cluster_means(clusters, labels, probabilities)
    out["clusters"] = level_metrics(cluster_labels, cluster_probs, ids, threshold, seed=seed, n_boot=n_boot)
    out["clusters"]["count"] = len(ids)
    consistency, multi = cluster_consistency(clusters, probabilities >= threshold)
    out["consistency"] = {"share_one_verdict": consistency, "multi_image_clusters": multi}
    return out


def pointing_game(
    records: Sequence[Record],
    data: ImageSet,
    cams: Sequence[np.ndarray],
    *,
    tolerances: Sequence[float] = (0.0,),
) -> dict[str, Any]:
    """Share of fractured images with boxes whose heatmap peak lies inside a box (per tolerance)."""
    hits: dict[float, list[bool]] = {t: [] for t in tolerances}
    no_hw_hits: list[bool] = []
    for i, r in enumerate(records):
        if r.label != 1 or not r.boxes:
            continue
        heatmap = cam_to_heatmap(cams[i], data.geometries[i])
        for t in tolerances:
            hit = pointing_hit(heatmap, r.boxes, tolerance=t)
            hits[t].append(hit)
            if t == 0.0 and r.hardware == 0:
                no_hw_hits.append(hit)
    out: dict[str, Any] = {"images": len(hits[tolerances[0]])}
    for t, values in hits.items():
        key = "share" if t == 0.0 else f"share_tolerance_{t:g}"
        out[key] = float(np.mean(values)) if values else float("nan")
    if no_hw_hits:
        out["share_no_hardware"] = float(np.mean(no_hw_hits))
    strict = hits.get(0.0, [])
    if strict:
        out["ci"] = wilson_interval(int(np.sum(strict)), len(strict))
    return out


# ------------------------------------------------------------------------------------------------ CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory or .keras file")
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--original-kaggle-split", action="store_true")
    p.add_argument("--split", default="test")
    p.add_argument("--sources", nargs="*", default=None, help="evaluate only these sources")
    p.add_argument(
        "--calibrate-on", default="val", help="split to fit calibration + threshold on ('card': keep)"
    )
    p.add_argument("--calibrate-sources", nargs="*", default=None, help="sources to calibrate on")
    p.add_argument("--calibration", choices=["platt", "temperature", "identity"], default="platt")
    p.add_argument("--target-sensitivity", type=float, default=0.95)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL/eval-SPLIT)")
    p.add_argument(
        "--write-card", action="store_true", help="store calibration, threshold and metrics in the card"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--bootstrap", type=int, default=N_BOOT)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from classifier.predict import Predictor

    predictor = Predictor.load(args.model)
    model_dir = predictor.path or args.model
    out = args.out or (Path(model_dir) / f"eval-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    if args.original_kaggle_split:
        records = load_kaggle_original_split(args.data[0])
    else:
        records = load_sources(args.data)

    result = evaluate(
        predictor,
        records,
        split=args.split,
        sources=args.sources,
        calibrate_on=args.calibrate_on,
        calibrate_sources=args.calibrate_sources,
        calibration_method=args.calibration,
        target=args.target_sensitivity,
        cache_dir=args.cache_dir,
        out=out,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    if args.write_card:
        card_path = Path(model_dir) / CARD_FILE
        card = read_card(card_path)
        card["calibration"] = result["calibration"]
        card["threshold"] = result["threshold"]
        card["threshold_rule"] = result["threshold_rule"]
        card.setdefault("metrics", {})[args.split] = summarise(result)
        card["status"] = "evaluated"
        write_card(card, card_path)
        log.info("updated %s", card_path)
    log.info("summary: %s", json.dumps(summarise(result), indent=1))
    return 0


def evaluate(
    predictor: Any,
    records: Sequence[Record],
    *,
    split: str,
    sources: Sequence[str] | None,
    calibrate_on: str,
    calibrate_sources: Sequence[str] | None,
    calibration_method: str,
    target: float,
    cache_dir: Path | None,
    out: Path,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    spec = predictor.input_spec
    result: dict[str, Any] = {"model_version": predictor.version, "split": split}

    # 1. Calibration and threshold, on validation data only.
    if calibrate_on == "card":
        calibration, threshold = dict(predictor.calibration), float(predictor.threshold)
        rule = predictor.card.get("threshold_rule", {"fitted_on": "card"})
    else:
        if calibrate_on == split:
            raise SystemExit("refusing to fit calibration and threshold on the evaluation split")
        cal_records = select(records, splits=[calibrate_on], sources=calibrate_sources or sources)
        cal = load_images(cal_records, spec, cache_dir=cache_dir)
        cal_logits = Scored(predictor, cal).logits
        cal_labels = cal.labels
        calibration = fit_calibration(cal_logits, cal_labels, calibration_method)
        cal_probs = calibrate(cal_logits, calibration)
        threshold, thresholds = fit_threshold(cal.records, cal_probs, target=target)
        rule = {
            "fitted_on": calibrate_on,
            "target_sensitivity": target,
            "level": "cluster (mean probability of a cluster's images)",
            "rule": "highest threshold reaching the target sensitivity on every source",
            "per_source": thresholds,
        }
        result["calibration_split"] = {
            "images": len(cal.records),
            "ece_before": expected_calibration_error(
                cal_labels, calibrate(cal_logits, {"method": "identity"})
            ),
            "ece_after": expected_calibration_error(cal_labels, cal_probs),
        }
        write_predictions(
            out / f"predictions-{calibrate_on}.csv",
            cal.records,
            {"logit": cal_logits, "probability": cal_probs},
        )
    result["calibration"] = calibration
    result["threshold"] = float(threshold)
    result["threshold_rule"] = rule

    # 2. The evaluation split.
    eval_records = select(records, splits=[split], sources=sources)
    data = load_images(eval_records, spec, cache_dir=cache_dir)
    predicted = Scored(predictor, data)
    logits = predicted.logits
    probabilities = calibrate(logits, calibration)
    write_predictions(
        out / f"predictions-{split}.csv", data.records, {"logit": logits, "probability": probabilities}
    )

    per_source: dict[str, Any] = {}
    roc_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reliability: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for source in sorted({r.source for r in data.records}):
        idx = np.array([i for i, r in enumerate(data.records) if r.source == source])
        recs = [data.records[i] for i in idx]
        probs = probabilities[idx]
        report = source_report(recs, probs, threshold, seed=seed, n_boot=n_boot)
        labels = np.array([r.label for r in recs])
        clusters = np.array([r.cluster for r in recs])
        roc_curves[f"{source} images"] = (labels, probs)
        reliability[f"{source} images"] = (labels, probs)
        ids, cl_labels, cl_probs = cluster_means(clusters, labels, probs)
        if len(ids) < len(recs):
            roc_curves[f"{source} clusters"] = (cl_labels, cl_probs)
        hardware = np.array([r.hardware for r in recs])
        if hardware.any():
            keep = hardware == 0
            report["no_hardware"] = source_report(
                [r for r, k in zip(recs, keep, strict=True) if k],
                probs[keep],
                threshold,
                seed=seed,
                n_boot=n_boot,
            )
            roc_curves[f"{source} no hardware"] = (labels[keep], probs[keep])
        regions = region_aucs(recs, labels, probs)
        if regions:
            report["regions"] = regions
        if predicted.cams is not None and any(r.boxes for r in recs):
            cams = [predicted.cams[i] for i in idx]
            sub = data.subset(idx)
            report["pointing_game"] = pointing_game(recs, sub, cams, tolerances=(0.0, 0.05))
            plot_pointing_examples(recs, sub, cams, out / f"pointing-{source}.png")
        per_source[source] = report
    result["sources"] = per_source
    plot_roc(roc_curves, out / "roc.png", f"{predictor.version}: ROC on {split}")
    plot_reliability(reliability, out / "reliability.png", f"{predictor.version}: reliability on {split}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=json_default))
    return result


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation, for the card and the report."""

    def level(m: dict[str, Any]) -> dict[str, Any]:
        keys = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "ece", "n", "positives")
        out = {k: m[k] for k in keys if k in m}
        for k in ("auc_ci", "sensitivity_ci", "specificity_ci"):
            if k in m:
                out[k] = [m[k]["low"], m[k]["high"]]
        out["confusion"] = {"tp": m["tp"], "fp": m["fp"], "tn": m["tn"], "fn": m["fn"]}
        return out

    summary: dict[str, Any] = {"threshold": result["threshold"], "sources": {}}
    for source, report in result["sources"].items():
        entry: dict[str, Any] = {"images": level(report["images"]), "clusters": level(report["clusters"])}
        entry["consistency"] = report["consistency"]
        if "no_hardware" in report:
            entry["no_hardware"] = {
                "images": level(report["no_hardware"]["images"]),
                "clusters": level(report["no_hardware"]["clusters"]),
            }
        if "pointing_game" in report:
            entry["pointing_game"] = report["pointing_game"]
        summary["sources"][source] = entry
    return summary


if __name__ == "__main__":
    sys.exit(main())
