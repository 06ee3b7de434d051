"""Release a v2 model: fit what is fitted on validation data, evaluate on test, write card and report.

    python -m classifier.release --run classifier_runs/lite0-det-v2 --out models/lite0-det-v2 \
        --data ../shared/datasets/bone-fracture-xray --data ../shared/datasets/fracatlas \
        --data ../shared/datasets/bone-fracture-boxes

1. Builds the serving graph (flip TTA inside) from the run's chosen epoch and saves ``model.keras``; with
   ``--input-size-candidates`` it first chooses on val the input size to serve the same weights at.
2. On ``val`` only, through the same ``Predictor`` the app uses: Platt calibration weighted by 1 / cluster
   size (so a few large, confidently wrong clusters of copies cannot flatten it); the two operating points
   per cluster (sensitive: sensitivity >= 0.95 on every source; specific: specificity >= 0.95 on every
   source); the box rule (threshold and grouping: the most fractures found at or under 0.5 false-positive
   boxes per FracAtlas val image; ``--refit-boxes`` chooses it alone for a released model); the out-
   of-distribution reference (training embeddings' centre and principal components, threshold at the 99th
   percentile of val distances); the drift references (score, intensity and size histograms).
3. On ``test`` (touched for nothing else): per source, per image and per cluster, AUC with cluster-bootstrap
   intervals, each band's meaning (sensitivity, specificity, share of images), ECE, one band per multi-image
   cluster, FracAtlas without hardware and per region; localisation (pointing game, FROC) on FracAtlas and the
   boxes source.
4. Writes ``card.json``, ``metrics.json``, ``predictions-*.csv``, ``figures/`` and ``report.md``.

A run trained on train + val (``classifier.train --train-on-val``, a final fit) has no val left to fit on, so
its release fits nothing there: calibration, operating points and TTA on ``--oof`` (required), the box rule
carried over from ``--boxes-from`` (a release of the same recipe that chose it on val), the OOD reference on
the training images (in-sample, said so on the card) and the drift reference on the out-of-fold scores.

This module is the command line and the order of those steps; what each step fits or measures lives by
topic: ``classifier.bands`` (calibration, operating points, what the bands mean), ``classifier.localisation``
(box rule, FROC, pointing game), ``classifier.references`` (OOD, colour and drift references),
``classifier.figures`` and ``classifier.release_report`` (the figures and ``report.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifier.bands import BAND_NAMES, band_of, fit_bands, one_band_share, source_report
from classifier.card import (
    CARD_FILE,
    MODEL_FILE,
    calibrate,
    finite_json,
    ood_distances,
    read_card,
    write_card,
)
from classifier.cells import CELL_STRIDE, BoxRule
from classifier.data import DEFAULT_CACHE, Record, load_images, load_sources, select
from classifier.detector import detector_core, detector_serving_model
from classifier.figures import plot_box_examples, plot_froc, plot_reliability, plot_roc
from classifier.localisation import FP_PER_IMAGE_TARGET, choose_box_rule, localisation_report
from classifier.metrics import N_BOOT, cluster_means, expected_calibration_error, fit_platt, source_metrics
from classifier.predict import Predictor
from classifier.preprocessing import InputSpec, to_model_input
from classifier.references import colour_reference, drift_reference, ood_reference
from classifier.release_report import at_least, fmt, write_report
from classifier.scoring import Logits, Scored, read_predictions, write_predictions

log = logging.getLogger("classifier.release")

# Boxes and the cell heatmap are shown by default only when both the pointing game and the fractures found
# at 0.5 false-positive boxes per image reach this on every held-out set with boxes.
LOCALISATION_VALIDATED = 0.5
# None of the three sources records the patients' ages (their READMEs and manifests have no age column), so
# no minimum age can be stated and the age guardrail stays off for models trained on them.
AGES_UNKNOWN = (
    "unknown: none of the training sources (bone-fracture-xray, FracAtlas, bone-fracture-boxes) records "
    "patient age, so no minimum age is stated and the age guardrail is off for this model"
)
LATENCY_BUDGET_MS = 150.0
OOF_FITTED = "out-of-fold predictions of the grouped cross-validation over train + val (per cluster)"
# The worker's goal is 10 radiographs/s; it reaches 84-90 % of the forward pass alone (bench/inference.py,
# README), so a TTA mode must run its forward pass at 12/s or more at the worker's batch of 16.
THROUGHPUT_FLOOR = 12.0
THROUGHPUT_BATCH = 16
THROUGHPUT_SECONDS = 8.0
# Serving sizes whose mean val AUC is within this of the best count as tied; the smallest (cheapest) wins.
SIZE_TIE = 0.005
# Where the model was trained (FracAtlas: hand, leg, hip, shoulder; the Kaggle set: upper and lower limbs,
# hips, knees; the boxes source: elbow, forearm, hand, humerus, shoulder, wrist), in radiology's body regions.
TRAINED_REGIONS = (
    "hand", "wrist", "forearm", "elbow", "humerus", "shoulder", "hip", "pelvis", "femur", "knee", "leg",
    "ankle", "foot",
)  # fmt: skip


def build_serving(
    run: Path,
    epoch: int | None,
    out: Path,
    *,
    tta: str | None = None,
    version: str | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Save the serving graph of the run's chosen epoch as ``out/model.keras``; return the run's card (under
    ``version`` when given: a re-release of the same weights is a new model version).

    ``size``: the serving input's side, when it is not the one the run trained at (the network is fully
    convolutional up to its mean pooling, so the same weights serve any size); the card's ``input`` is then
    the serving size and ``training.input_size`` keeps the trained one.
    """
    card = read_card(run / CARD_FILE)
    card["version"] = version or card["version"]
    chosen = epoch or int(card["training"]["best_epoch"])
    trained = trained_size(card)
    card["training"]["input_size"] = trained
    card["input"]["size"] = size or trained
    core = detector_core(
        int(card["input"]["size"]), backbone=card_backbone(card), cell_stride=card_cell_stride(card)
    )
    core.load_weights(run / f"epoch{chosen}.weights.h5")
    out.mkdir(parents=True, exist_ok=True)
    tta = tta or card["architecture"]["tta"]
    detector_serving_model(core, tta=tta).save(out / MODEL_FILE)
    card["architecture"]["tta"] = tta
    card["training"]["released_epoch"] = chosen
    card["calibration"], card["threshold"] = {"method": "identity"}, 0.5
    write_card(card, out / CARD_FILE)
    return card


def card_backbone(card: dict[str, Any]) -> str:
    """The EfficientNet-Lite variant a card's run trained (cards from before the option: Lite0)."""
    return str(card["training"]["recipe"].get("backbone", "lite0"))


def card_cell_stride(card: dict[str, Any]) -> int:
    """The pixels per fracture cell of a card's run (cards from before the option: 16)."""
    return int(card["training"]["recipe"].get("cell_stride", CELL_STRIDE))


def trained_size(card: dict[str, Any]) -> int:
    """The input side a run or a release trained at (a release may serve at another)."""
    return int(card["training"].get("input_size") or card["input"]["size"])


def unpack_released(model_dir: Path, run: Path) -> None:
    """Make a training-run folder (``card.json`` + ``epoch{k}.weights.h5``) from a released model, so a
    release can be fitted again from the same weights when the run itself is no longer kept."""
    predictor = Predictor.load(model_dir)
    card = dict(predictor.card)
    epoch = int(card["training"].get("released_epoch") or card["training"]["best_epoch"])
    run.mkdir(parents=True, exist_ok=True)
    predictor.model.get_layer("lite0_det").save_weights(run / f"epoch{epoch}.weights.h5")
    # What the release fits goes; what training wrote stays.
    fitted = {"operating_points", "boxes", "heatmap", "ood", "reference", "metrics", "calibration_check",
              "tta_choice", "cross_validation", "intended_use", "outputs"}  # fmt: skip
    card = {k: v for k, v in card.items() if k not in fitted}
    card |= {"calibration": {"method": "identity"}, "threshold": 0.5, "status": f"unpacked from {model_dir}"}
    card["input"] = dict(card["input"]) | {"size": trained_size(card)}  # the run's, not the serving size
    write_card(card, run / CARD_FILE)
    curves = model_dir / "figures" / "curves.png"  # the training curves travel with the weights
    if curves.exists():
        (run / "curves.png").write_bytes(curves.read_bytes())


def read_out_of_fold(
    cv: Path, records: list[Record], modes: list[str]
) -> tuple[dict[str, Logits], dict[str, Any]]:
    """Every fold's out-of-fold logits (``classifier.train --arch lite0det --cv``), per TTA mode."""
    summary = json.loads((cv / "cv_summary.json").read_text())
    files = sorted(cv.glob("oof-fold*.csv"))
    if len(files) != summary["folds"]:
        raise SystemExit(f"{cv} holds {len(files)} of its {summary['folds']} folds: run the others first")
    by_path = {str(r.path): r for r in records}
    rows = [row for f in files for row in read_predictions(f)]
    chosen = [by_path[row["path"]] for row in rows]
    missing = [m for m in modes if f"logit_{m}" not in rows[0]]
    if missing:
        raise SystemExit(f"{cv} has no out-of-fold logits for {missing}")
    logits = {m: Logits(chosen, np.array([float(row[f"logit_{m}"]) for row in rows])) for m in modes}
    return logits, summary


def throughput(predictor: Any, images: np.ndarray) -> float:
    """Radiographs per second of the forward pass at the worker's batch size, after a warm-up."""
    seconds = THROUGHPUT_SECONDS
    batch = to_model_input(np.resize(images, (THROUGHPUT_BATCH, *images.shape[1:])))
    predictor.forward(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.forward(batch)
        done += THROUGHPUT_BATCH
    return done / (time.perf_counter() - started)


def latency_ms(predictor: Any, image: np.ndarray, *, calls: int = 15) -> float:
    """Median wall time of one radiograph's forward pass (batch 1), after a warm-up."""
    batch = to_model_input(image[None])
    predictor.forward(batch)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        predictor.forward(batch)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def inference_cost(predictor: Any, images: np.ndarray) -> dict[str, float]:
    """A serving graph's batch-1 latency and worker-batch throughput, as the release's rules weigh them."""
    return {
        "latency_ms_batch1": latency_ms(predictor, images[0]),
        "radiographs_per_s": throughput(predictor, images),
    }


def within_budget(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The candidates whose cost fits the inference budget (LATENCY_BUDGET_MS and THROUGHPUT_FLOOR)."""
    return {
        k: r
        for k, r in rows.items()
        if r["latency_ms_batch1"] <= LATENCY_BUDGET_MS and r["radiographs_per_s"] >= THROUGHPUT_FLOOR
    }


def score_split(
    predictor: Any, records: list[Record], split: str, cache_dir: Path | None, *, every: int = 1
) -> Scored:
    """Every ``every``-th image of a split, through the predictor."""
    chosen = select(records, splits=[split])[::every]
    log.info("predicting %d %s images", len(chosen), split)
    return Scored(predictor, load_images(chosen, predictor.input_spec, cache_dir=cache_dir))


def write_band_predictions(
    path: Path, scored: Scored, probabilities: np.ndarray, points: dict[str, Any]
) -> None:
    """``predictions-*.csv``: each image's logit, calibrated probability and band."""
    bands = band_of(probabilities, points["sensitive"], points["specific"])
    names = [BAND_NAMES[b] for b in bands]
    write_predictions(
        path, scored.records, {"logit": scored.logits, "probability": probabilities, "band": names}
    )


def write_outputs(card: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The card (NaN as null), its metrics and the report beside it, with the previous model's figures and the
    notes."""
    card = finite_json(card)
    write_card(card, args.out / CARD_FILE)
    (args.out / "metrics.json").write_text(json.dumps(card["metrics"], indent=2, default=float))
    compared = [read_card(folder / CARD_FILE) for folder in args.compare]
    notes = args.notes.read_text() if args.notes and args.notes.exists() else ""
    write_report(card, args.out, compared=compared, notes=notes)
    return card


def tta_row(scores: Logits, classified: list[str]) -> dict[str, Any]:
    """One TTA mode's figures on the data it is chosen on (val, or out-of-fold): the mean AUC, and its
    steadiness across a radiograph's turned and zoomed copies (the share of Kaggle multi-image clusters with
    one band once bands are fitted on the same data, the mean spread of the logits within them)."""
    _, probabilities, points = fit_bands(scores, classified)
    kaggle = scores.where("kaggle")
    bands = band_of(probabilities[kaggle], points["sensitive"], points["specific"])
    consistency, clusters = one_band_share(scores.clusters[kaggle], bands)
    _, inverse, counts = np.unique(scores.clusters[kaggle], return_inverse=True, return_counts=True)
    spread = [float(np.std(scores.logits[kaggle][inverse == c])) for c in np.flatnonzero(counts >= 2)]
    return {
        "auc_score": source_metrics(scores.records, scores.logits)["score"],
        "kaggle_one_band": consistency,
        "kaggle_multi_image_clusters": clusters,
        "kaggle_logit_spread": float(np.mean(spread)) if spread else float("nan"),
    }


def choose_tta(
    args: argparse.Namespace,
    records: list[Record],
    classified: list[str],
    out_of_fold: dict[str, Logits] | None,
    size: int | None = None,
) -> dict[str, Any]:
    """Choose the test-time augmentation: the best mean AUC among the modes within the inference budget.

    Scored on the out-of-fold logits of the grouped cross-validation when there are some (``--oof``), else
    on val through the serving graph. Budget: the batch-1 forward pass within LATENCY_BUDGET_MS and the
    forward pass at the worker's batch at THROUGHPUT_FLOOR radiographs/s or more, both measured here with
    this run's weights. (The first v2 release scored on val and weighed latency only; an earlier rule there
    that also averaged in the one-band share of 16 val clusters was dropped as too coarse before any test
    figure was computed.)
    """
    rows: dict[str, dict[str, Any]] = {}
    # Every mode serves the same weights at the same input: the val images are loaded once.
    val_records = [r for r in select(records, splits=["val"]) if r.source in classified]
    val = load_images(
        val_records if out_of_fold is None else val_records[:THROUGHPUT_BATCH],
        serving_spec(args.run, size),
        cache_dir=args.cache_dir,
    )
    images = val.images[:THROUGHPUT_BATCH]
    for mode in args.tta_candidates:
        folder = args.out / f".tta-{mode}"
        build_serving(args.run, args.epoch, folder, tta=mode, size=size)
        predictor = Predictor.load(folder)
        scores: Logits = out_of_fold[mode] if out_of_fold is not None else Scored(predictor, val)
        rows[mode] = tta_row(scores, classified) | inference_cost(predictor, images)
        log.info("TTA %s: %s", mode, rows[mode])
        shutil.rmtree(folder)
    within = within_budget(rows)
    fast = {m: r for m, r in rows.items() if r["latency_ms_batch1"] <= LATENCY_BUDGET_MS}
    eligible = within or fast or rows
    best = max(eligible, key=lambda m: eligible[m]["auc_score"])
    scored_on = "out-of-fold predictions of the grouped cross-validation" if out_of_fold else "val"
    return {
        "chosen": best,
        "scored_on": scored_on,
        "candidates": rows,
        "rule": f"the highest mean AUC on the {scored_on} among the modes whose batch-1 forward pass takes "
        f"at most {LATENCY_BUDGET_MS:.0f} ms here and whose forward pass at batch {THROUGHPUT_BATCH} runs "
        f"at {THROUGHPUT_FLOOR:.0f} radiographs/s or more (the worker's 10/s goal over the 84-90 % of the "
        "forward pass it reaches)",
    }


def serving_spec(run: Path, size: int | None) -> InputSpec:
    """The run's input spec at the serving ``size`` (its trained size when None)."""
    values = dict(read_card(run / CARD_FILE)["input"])
    return InputSpec.from_dict(values | ({"size": size} if size else {}))


def choose_input_size(
    args: argparse.Namespace, records: list[Record], classified: list[str]
) -> dict[str, Any]:
    """Choose the serving input size on val: the highest mean AUC among the sizes within the inference
    budget (as ``choose_tta``'s), the smallest of those within SIZE_TIE of it.

    A network trained on zoomed crops sees fractures larger than a test image at the same input shows them,
    so serving slightly above the trained size can rank better (Touvron et al., *Fixing the train-test
    resolution discrepancy*, 2019). Val only: the out-of-fold logits were scored at the trained size.
    """
    tta = args.tta or read_card(args.run / CARD_FILE)["architecture"]["tta"]
    val_records = [r for r in select(records, splits=["val"]) if r.source in classified]
    rows: dict[int, dict[str, Any]] = {}
    for size in args.input_size_candidates:
        folder = args.out / f".size-{size}"
        build_serving(args.run, args.epoch, folder, tta=tta, size=size)
        predictor = Predictor.load(folder)
        val = load_images(val_records, predictor.input_spec, cache_dir=args.cache_dir)
        scores = Scored(predictor, val)
        aucs = source_metrics(scores.records, scores.logits)
        images = val.images[:THROUGHPUT_BATCH]
        rows[size] = {
            "auc_score": aucs["score"],
            "aucs": {k: v for k, v in aucs.items() if k.endswith("auc")},
        } | inference_cost(predictor, images)
        log.info("input %d px: %s", size, rows[size])
        shutil.rmtree(folder)
    within = within_budget(rows) or rows
    best = max(r["auc_score"] for r in within.values())
    chosen = min(k for k, r in within.items() if r["auc_score"] >= best - SIZE_TIE)
    return {
        "chosen": chosen,
        "trained": trained_size(read_card(args.run / CARD_FILE)),
        "tta": tta,
        "scored_on": "val",
        "candidates": {str(k): v for k, v in rows.items()},
        "rule": f"the smallest input within {SIZE_TIE} of the highest mean val AUC among the sizes whose "
        f"batch-1 forward pass takes at most {LATENCY_BUDGET_MS:.0f} ms here and whose forward pass at batch "
        f"{THROUGHPUT_BATCH} runs at {THROUGHPUT_FLOOR:.0f} radiographs/s or more",
    }


def release(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    records = load_sources(args.data)
    if args.from_model:
        unpack_released(args.from_model, args.run)
    run_card = read_card(args.run / CARD_FILE)
    classified = sorted(run_card["training"]["image_loss_sources"])
    final_fit = trained_on_val(run_card)
    if final_fit and (args.oof is None or args.boxes_from is None):
        raise SystemExit(
            f"{args.run} was trained on train + val: nothing can be fitted on val, so its release needs "
            "--oof (calibration, operating points, TTA) and --boxes-from (a box rule chosen on val by a "
            "release of the same recipe)"
        )
    default_tta = args.tta or run_card["architecture"]["tta"]
    modes = args.tta_candidates or [default_tta]
    out_of_fold, cv_summary = read_out_of_fold(args.oof, records, modes) if args.oof else (None, None)
    size_choice = choose_input_size(args, records, classified) if args.input_size_candidates else None
    size = size_choice["chosen"] if size_choice else args.input_size
    cv_size = int(cv_summary["recipe"]["size"]) if cv_summary else None
    if cv_size and size and size != cv_size:
        raise SystemExit(
            f"the out-of-fold logits were scored at {cv_size} px, not at the serving {size} px: "
            "calibration and operating points cannot be fitted on them"
        )
    tta_choice = choose_tta(args, records, classified, out_of_fold, size) if args.tta_candidates else None
    tta = tta_choice["chosen"] if tta_choice else default_tta
    card = build_serving(args.run, args.epoch, args.out, tta=tta, version=args.version, size=size)
    if tta_choice:
        card["tta_choice"] = tta_choice
    if size_choice:
        card["input_size_choice"] = size_choice
    predictor = Predictor.load(args.out)
    val = score_split(predictor, records, "val", args.cache_dir)
    test = score_split(predictor, records, "test", args.cache_dir)
    train = score_split(predictor, records, "train", args.cache_dir, every=args.train_every)

    # 1. Calibration and operating points, each distinct radiograph weighing the same: on the out-of-fold
    #    logits of the chosen TTA when there are some (about five times as many clusters as val), else on val.
    val_cls = np.flatnonzero(np.isin(val.sources, classified))
    if out_of_fold is not None:
        fitted = out_of_fold[card["architecture"]["tta"]]
        calibration, fitted_probs, points = fit_bands(fitted, classified, fitted_on=OOF_FITTED)
        val_probs = calibrate(val.logits, calibration)
    else:
        fitted = val
        calibration, val_probs, points = fit_bands(val, classified)
        fitted_probs = val_probs
    fitted_cls = np.flatnonzero(np.isin(fitted.sources, classified))
    unweighted = fit_platt(fitted.logits[fitted_cls], fitted.labels[fitted_cls])

    # 2. References: val only (the box rule too, in box_outputs below). A final fit trained on val: its OOD
    #    threshold is in-sample (said so on the card) and its score reference the out-of-fold scores.
    ood = ood_reference(train, val, in_sample=final_fit) | {
        "colour": colour_reference(val.records, test.records)  # the images' colour: no model involved
    }
    if final_fit:
        reference = drift_reference([fitted.records[i] for i in fitted_cls], fitted_probs[fitted_cls])
    else:
        reference = drift_reference([val.records[i] for i in val_cls], val_probs[val_cls])

    # 3. Test.
    test_probs = calibrate(test.logits, calibration)
    per_source: dict[str, Any] = {}
    for source in classified:
        per_source[source] = source_report(test, test.where(source), test_probs, points, args.n_boot)
    test_ood = ood_distances(test.embeddings, ood) > ood["threshold"]

    # 4. Figures and files.
    figures = args.out / "figures"
    figures.mkdir(exist_ok=True)
    curves = {}
    for source in classified:
        idx = test.where(source)
        curves[f"{source} images"] = (test.labels[idx], test_probs[idx])
        ids, cl, cp = cluster_means(test.clusters[idx], test.labels[idx], test_probs[idx])
        if len(ids) < len(idx):
            curves[f"{source} clusters"] = (cl, cp)
    plot_roc(curves, figures / "roc.png", "ROC on test")
    plot_reliability(curves, figures / "reliability.png", "Reliability on test")
    carried = read_card(args.boxes_from / CARD_FILE) if args.boxes_from else None
    boxes, heatmap, localisation = box_outputs(val, test, figures, carried_from=carried)
    if not final_fit:  # a final fit's val predictions are in-sample: no file to mistake for held-out ones
        write_band_predictions(args.out / "predictions-val.csv", val, val_probs, points)
    write_band_predictions(args.out / "predictions-test.csv", test, test_probs, points)

    points["bands"] = {
        source: {
            level: {
                "no_fracture": per_source[source][level]["sensitive"]
                | {"share": per_source[source][level]["bands"]["no_fracture"]["share"]},
                "doubt": per_source[source][level]["bands"]["doubt"],
                "fracture": per_source[source][level]["specific"]
                | {"share": per_source[source][level]["bands"]["fracture"]["share"]},
            }
            for level in ("images", "clusters")
        }
        for source in classified
    }
    side = int(card["input"]["size"])
    card.update(
        calibration=calibration,
        threshold=points["sensitive"],
        operating_points=points,
        boxes=boxes,
        heatmap=heatmap,
        ood=ood | {"test_flag_rate": float(np.mean(test_ood))},
        intended_use={
            "modalities": ["DX", "CR", "DR"],
            "body_regions": list(TRAINED_REGIONS),
            "min_age_years": None,
            "ages": AGES_UNKNOWN,
        },
        reference=reference,
        outputs={
            "logit": "fracture logit (N, 1) before calibration",
            "cam": f"image head's logit map (N, {side // 32}, {side // 32}) at stride 32 (its mean is the "
            "logit)",
            "cells": f"fracture-cell logits (N, {side // 16}, {side // 16}) at stride 16; boxes are made "
            "from them",
            "embedding": "pooled stride-32 backbone features (N, 1280), for out-of-distribution checks",
        },
        metrics={"test": {"sources": per_source, "localisation": localisation}},
        calibration_check={
            "unweighted_platt": {"a": unweighted["a"], "b": unweighted["b"]},
            # The released weights on val under this calibration: for out-of-fold fitting, a check that
            # what the fold models taught carries over to the model trained on all of train (none for a
            # final fit, which trained on val).
            "val_ece_per_source": None
            if final_fit
            else {
                s: expected_calibration_error(val.labels[val.where(s)], val_probs[val.where(s)])
                for s in classified
            },
            "fitted_ece_per_source": {
                s: expected_calibration_error(fitted.labels[fitted.where(s)], fitted_probs[fitted.where(s)])
                for s in classified
            },
        },
        status=f"released: calibration and operating points fitted on {points['fitted_on']}; "
        + (
            f"trained on train + val: box rule carried over from {carried['version']}, OOD reference on the "
            "training images, score reference on the out-of-fold scores"
            if final_fit and carried
            else "box threshold and references on val"
        )
        + "; metrics on test",
    )
    if cv_summary is not None and out_of_fold is not None:
        card["cross_validation"] = cross_validation_summary(cv_summary, out_of_fold, classified)
    card = write_outputs(card, args)
    if (args.run / "curves.png").exists():
        (figures / "curves.png").write_bytes((args.run / "curves.png").read_bytes())
    log.info("released %s in %.0f s", card["version"], time.perf_counter() - started)
    return card


def trained_on_val(card: dict[str, Any]) -> bool:
    """Whether a training run's card says it trained on val too (``classifier.train --train-on-val``)."""
    return "val" in (card.get("training_data") or {}).get("splits_trained_on", ["train"])


def box_outputs(
    val: Scored, test: Scored, figures: Path, *, carried_from: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The box rule chosen on val (or carried over from the card ``carried_from``), its localisation figures
    on test and their plots: the card's ``boxes`` and ``heatmap`` and its test ``localisation``."""
    sources = [s for s in ("fracatlas", "boxes") if any(r.boxes for r in test.records if r.source == s)]
    if carried_from is not None:
        rule, choice = BoxRule.from_card(carried_from), carried_from["boxes"].get("val_froc")
    else:
        rule, choice = choose_box_rule(val, sources)
    localisation = {s: localisation_report(test, test.where(s), rule) for s in sources}
    plot_froc({s: localisation[s]["froc"]["curve"] for s in localisation}, figures / "froc.png")
    for source in sources:
        fractured = [
            int(i) for i in test.where(source) if test.records[i].label == 1 and test.records[i].boxes
        ]
        rng = np.random.default_rng(0)
        sample = sorted(rng.choice(fractured, size=min(12, len(fractured)), replace=False).tolist())
        plot_box_examples(
            test,
            sample,
            rule,
            figures / f"boxes-{source}.png",
            f"{source} test (random fractured images): true boxes green, model red, peak +",
        )
    pointing = {s: localisation[s]["pointing_game"]["share"] for s in localisation}
    found = {s: localisation[s]["froc"]["at_0.5_fp_per_image"]["sensitivity"] for s in localisation}
    # Shown by default only when it points at fractures on every held-out set more often than not.
    validated = all(
        at_least(pointing[s], LOCALISATION_VALIDATED) and at_least(found[s], LOCALISATION_VALIDATED)
        for s in localisation
    )
    summary = "; ".join(
        f"{s} test: peak inside a fracture box on {fmt(pointing[s], 2)} of fractured images, "
        f"{fmt(found[s], 2)} of fractures found at 0.5 false-positive boxes per image"
        for s in localisation
    )
    boxes = {
        "threshold": rule.threshold,
        "peak_drop": rule.peak_drop,
        "max_boxes": rule.max_boxes,
        "fitted_on": "val (FracAtlas, the source with normal radiographs)"
        + (f" by {carried_from['version']}, carried over" if carried_from is not None else ""),
        "carried_from": carried_from["version"] if carried_from is not None else None,
        "rule": f"{rule.describe()}; of the groupings and thresholds, the one finding the most fractures at "
        f"<= {FP_PER_IMAGE_TARGET} false-positive boxes per image on FracAtlas val"
        + (f" (chosen for {carried_from['version']}, same recipe)" if carried_from is not None else ""),
        "cell_stride": test.data.spec.size // test.cells.shape[1],
        "val_froc": choice,
        "validated": validated,
        "validation": summary,
    }
    heatmap = {
        "what": "fracture-cell probabilities (absolute scale 0-1, 16-pixel cells of the model input)",
        "validated": validated,
        "validation": summary,
    }
    return boxes, heatmap, localisation


def refit_boxes(args: argparse.Namespace) -> dict[str, Any]:
    """Choose only the box rule of a released model again on val (its card's ``boxes``, ``heatmap`` and test
    localisation, the box plots and the report); the weights, calibration, bands and TTA are unchanged."""
    predictor = Predictor.load(args.out)
    card = dict(predictor.card)
    if trained_on_val(card):
        raise SystemExit(f"{args.out} was trained on val: a box rule chosen there would be chosen in-sample")
    records = load_sources(args.data)
    val = score_split(predictor, records, "val", args.cache_dir)
    test = score_split(predictor, records, "test", args.cache_dir)
    boxes, heatmap, localisation = box_outputs(val, test, args.out / "figures")
    card.update(boxes=boxes, heatmap=heatmap)
    card["metrics"] = dict(card["metrics"])
    card["metrics"]["test"] = dict(card["metrics"]["test"]) | {"localisation": localisation}
    return write_outputs(card, args)


def cross_validation_summary(
    summary: dict[str, Any], out_of_fold: dict[str, Logits], classified: list[str]
) -> dict[str, Any]:
    """What the card keeps of the cross-validation: its design, time and figures per fold and pooled."""
    held = next(iter(out_of_fold.values()))
    counts = {
        s: {"images": len(held.where(s)), "clusters": len(set(held.clusters[held.where(s)]))}
        for s in sorted(set(held.sources))
    }
    pooled = {}
    for mode, scores in out_of_fold.items():
        keep = [i for i, r in enumerate(scores.records) if r.source in classified]
        pooled[mode] = source_metrics([scores.records[i] for i in keep], scores.logits[keep])
    return {
        "folds": summary["folds"],
        "design": "whole clusters per fold over train + val of every source (StratifiedGroupKFold by source "
        "and label); clusters over 40 images always train; each fold trains the release's recipe for its "
        "epochs with no selection on its held-out part",
        "seed": summary.get("seed"),
        "seconds_per_fold": summary["seconds_per_fold"],
        "held_out": counts,
        "per_fold": {k: v for k, v in summary.items() if k.startswith("fold") and k[4:].isdigit()},
        "pooled": pooled,
    }


def refit_ood(args: argparse.Namespace) -> dict[str, Any]:
    """Refit only the out-of-distribution reference of a released model (its card and report), from the same
    training and val images through the released serving graph; nothing else of the card changes."""
    predictor = Predictor.load(args.out)
    card = dict(predictor.card)
    records = load_sources(args.data)
    val = score_split(predictor, records, "val", args.cache_dir)
    test = score_split(predictor, records, "test", args.cache_dir)
    train = score_split(predictor, records, "train", args.cache_dir, every=args.train_every)
    ood = ood_reference(train, val, in_sample=trained_on_val(card))
    card["ood"] = ood | {
        "test_flag_rate": float(np.mean(ood_distances(test.embeddings, ood) > ood["threshold"])),
        "colour": colour_reference(val.records, test.records),
    }
    return write_outputs(card, args)


def refit_colour(args: argparse.Namespace) -> dict[str, Any]:
    """Fit only the colour check of a released model from its val images (no forward pass; the rest of
    the card is unchanged), and rewrite its report."""
    card = read_card(args.out / CARD_FILE)
    records = load_sources(args.data)
    card["ood"] = dict(card["ood"]) | {
        "colour": colour_reference(select(records, splits=["val"]), select(records, splits=["test"]))
    }
    return write_outputs(card, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a classifier.train --arch lite0det output folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--epoch", type=int, default=None, help="release this epoch (default: the run's best)")
    p.add_argument("--train-every", type=int, default=3, help="every n-th training image for the OOD centre")
    p.add_argument("--n-boot", type=int, default=N_BOOT)
    p.add_argument("--refit-ood", action="store_true", help="refit only the OOD reference of --out's release")
    p.add_argument("--refit-colour", action="store_true", help="fit only the colour check of --out's release")
    p.add_argument("--refit-boxes", action="store_true", help="choose only the box rule of --out's release")
    p.add_argument("--version", default=None, help="the released model's version (default: the run's)")
    p.add_argument("--tta", default=None, help="test-time augmentation of the release (default: the run's)")
    p.add_argument(
        "--oof", type=Path, default=None,
        help="a classifier.train --arch lite0det --cv output: fit calibration, operating points and the TTA "
        "on its out-of-fold logits instead of val",
    )  # fmt: skip
    p.add_argument(
        "--boxes-from", type=Path, default=None,
        help="a released model of the same recipe whose box rule (chosen on val) a final fit carries over",
    )  # fmt: skip
    p.add_argument(
        "--from-model", type=Path, default=None,
        help="a released model: unpack its weights into --run first (when the training run is not kept)",
    )  # fmt: skip
    p.add_argument(
        "--tta-candidates", nargs="*", default=[], help="choose the TTA among these on val (see choose_tta)"
    )
    p.add_argument("--input-size", type=int, default=None, help="serve at this input side (default: trained)")
    p.add_argument(
        "--input-size-candidates", nargs="*", type=int, default=[],
        help="choose the serving input side among these on val (see choose_input_size)",
    )  # fmt: skip
    p.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="an earlier model's folder, whose test figures the goals table shows beside (repeatable)",
    )
    p.add_argument("--notes", type=Path, default=None, help="a Markdown file appended to the report")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.refit_ood:
        refit_ood(args)
    elif args.refit_colour:
        refit_colour(args)
    elif args.refit_boxes:
        refit_boxes(args)
    else:
        release(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
