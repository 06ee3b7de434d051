"""A two-step training run, its evaluation, and the audit, on the fixture images only."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from classifier.data import sha256_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path, labelled: dict) -> Path:
    """Every fixture in every split (a software test, not a measurement), with a FracAtlas-style manifest."""
    root = tmp_path_factory.mktemp("data") / "fracatlas"
    rows = []
    for split in ("train", "val", "test"):
        for name in sorted(labelled):
            _, label = labelled[name]
            rel = Path(split) / label / name
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(fixtures_dir / name, root / rel)
            rows.append(
                {
                    "sha256": sha256_file(fixtures_dir / name),
                    "path": str(rel),
                    "label": label,
                    "split": split,
                    "cluster": f"{split}-{name.split('_')[0]}-{label}",
                    "region": "hand" if "IMG" in name else "leg",
                    "hardware": "0",
                    "fracture_boxes": "0.5120 0.4392 0.0780 0.1750" if "IMG0000480" in name else "",
                }
            )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classifier.train import main

    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    args = ["--data", str(dataset), "--arch", "tiny", "--size", "32", "--epochs", "2", "--max-steps", "1"]
    args += [
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--verbose",
        "0",
        "--cache-dir",
        str(out.parent / "cache"),
    ]
    assert main(args) == 0
    return out


def test_a_two_step_training_run_writes_a_loadable_artifact(trained: Path, fixtures_dir: Path) -> None:
    from classifier.decoding import decode_grayscale
    from classifier.predict import Predictor

    for name in ("model.keras", "card.json", "history.json", "curves.png", "val_predictions.csv"):
        assert (trained / name).exists(), name
    history = json.loads((trained / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "fracatlas_auc" in history[0]
    predictor = Predictor.load(trained)
    card = predictor.card
    assert card["training"]["recipe"]["arch"] == "tiny" and card["training_data"]["fingerprint"]
    gray = decode_grayscale((fixtures_dir / "kaggle_fractured_1.jpg").read_bytes())
    assert 0 <= predictor.predict([gray])[0].probability <= 1


def test_evaluation_fits_calibration_on_val_and_writes_the_card(trained: Path, dataset: Path) -> None:
    from classifier.card import read_card
    from classifier.evaluate import main

    out = trained / "eval"
    args = ["--model", str(trained), "--data", str(dataset), "--split", "test", "--out", str(out)]
    args += ["--write-card", "--bootstrap", "50", "--cache-dir", str(trained.parent / "cache")]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    report = metrics["sources"]["fracatlas"]
    assert report["images"]["n"] == 8 and "auc_ci" in report["images"]
    assert report["clusters"]["count"] == 4
    assert report["pointing_game"]["images"] == 1
    assert metrics["threshold_rule"]["fitted_on"] == "val"
    for name in ("roc.png", "reliability.png", "predictions-test.csv", "predictions-val.csv"):
        assert (out / name).exists(), name
    card = read_card(trained / "card.json")
    assert card["calibration"]["method"] == "platt"
    assert card["threshold"] == metrics["threshold"]
    assert "test" in card["metrics"]


def test_evaluation_refuses_to_calibrate_on_the_test_split(trained: Path, dataset: Path) -> None:
    from classifier.evaluate import main

    with pytest.raises(SystemExit):
        main(["--model", str(trained), "--data", str(dataset), "--split", "test", "--calibrate-on", "test"])


def test_the_audit_finds_planted_exact_and_near_duplicates(tmp_path: Path, fixtures_dir: Path) -> None:
    import cv2

    from classifier.audit import audit, write_plots, write_report

    root = tmp_path / "kaggle-like"
    for split, label, name in [
        ("train", "fractured", "kaggle_fractured_1.jpg"),
        ("train", "not fractured", "kaggle_not_fractured_1.jpg"),
        ("train", "fractured", "fracatlas_fractured_IMG0000480.jpg"),
        ("val", "not fractured", "fracatlas_not_fractured_IMG0000263.jpg"),
        ("test", "fractured", "kaggle_fractured_rgba.png"),
    ]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures_dir / name, root / split / label / name)
    # An exact copy under another name in test, as in the Kaggle split ("x - Copy.jpg").
    shutil.copy(
        fixtures_dir / "kaggle_fractured_1.jpg", root / "test" / "fractured" / "kaggle_fractured_1 - Copy.jpg"
    )
    # A near copy in val: the FracAtlas image mirrored, turned a right angle, resized and recompressed.
    gray = cv2.imread(str(fixtures_dir / "fracatlas_fractured_IMG0000480.jpg"), cv2.IMREAD_GRAYSCALE)
    assert gray is not None
    near = cv2.resize(np.rot90(gray[:, ::-1]), (300, 240), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "val" / "not fractured" / "suspicious.png"), near)
    # And an unreadable file.
    (root / "test" / "fractured" / "broken.jpg").write_bytes(
        (fixtures_dir / "kaggle_truncated.jpg").read_bytes()
    )

    summary, items = audit(root)
    assert summary["leakage"]["test"]["exact_copy_in_train"] == 1
    assert summary["leakage"]["val"]["near_copy_in_train"] == 1
    assert summary["near"]["label_conflicts"] == 1  # the near copy was filed under the other label
    assert summary["exact"]["redundant_files"] == 1
    assert [u["path"].endswith("broken.jpg") for u in summary["unreadable"]] == [True]
    assert any(flag.startswith("LEAKAGE") for flag in summary["flags"])
    plots = write_plots(items, tmp_path, summary)
    report = write_report(summary, plots, tmp_path).read_text()
    assert "LEAKAGE" in report and all((tmp_path / p).exists() for p in plots.values())


def test_the_audit_passes_distinct_images(tmp_path: Path, fixtures_dir: Path) -> None:
    from classifier.audit import audit

    root = tmp_path / "clean"
    for split, label, name in [
        ("train", "fractured", "kaggle_fractured_1.jpg"),
        ("test", "not fractured", "fracatlas_not_fractured_IMG0000263.jpg"),
    ]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures_dir / name, root / split / label / name)
    summary, _ = audit(root)
    assert not [f for f in summary["flags"] if f.startswith(("LEAKAGE", "LABELS", "DUPLICATES"))]


def test_the_report_puts_goals_comparisons_and_experiments_together(trained: Path, dataset: Path) -> None:
    from classifier.evaluate import main as evaluate
    from classifier.report import write_report

    eval_dir = trained / "eval-test"
    if not (eval_dir / "metrics.json").exists():
        args = ["--model", str(trained), "--data", str(dataset), "--split", "test", "--out", str(eval_dir)]
        assert (
            evaluate([*args, "--write-card", "--bootstrap", "20", "--cache-dir", str(trained.parent / "c")])
            == 0
        )
    notes = trained / "notes.md"
    notes.write_text("## Findings\n\nA tiny model learns nothing from eight images.\n")
    report = write_report(trained, compare={"itself again": eval_dir}, cv_runs={}, notes=notes).read_text()
    assert "## Goals" in report and "Pointing game" in report and "A tiny model learns nothing" in report
    assert "itself again" in report and (trained / "figures" / "roc.png").exists()


def test_options_the_detector_does_not_use_are_refused_for_it_and_taken_by_the_older_networks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from classifier import train

    base = ["--data", "d", "--out", "o"]
    for unused in (["--optimizer", "adam"], ["--pooling", "lse"], ["--patience", "2"], ["--freeze-epochs", "1"],
                   ["--class-balance", "global"]):  # fmt: skip
        with pytest.raises(SystemExit):
            train.parse_args([*base, *unused])  # lite0det, the default network
        assert "not used by --arch lite0det" in capsys.readouterr().err
        assert train.parse_args([*base, "--arch", "lite0", *unused])  # the image-level network uses it
    # Its defaults, said or not, and the options the detector does use, pass.
    args = train.parse_args([*base, "--optimizer", "adamw", "--dropout", "0.5", "--label-smoothing", "0.1"])
    assert (args.dropout, args.label_smoothing) == (0.5, 0.1)
