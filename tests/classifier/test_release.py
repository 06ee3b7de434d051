"""The v2 recipe end to end on the fixture images: `classifier.train --arch lite0det` (one step, random
backbone), then `classifier.release` (calibration, operating points, box threshold, references, test figures,
card and report). A software test of the pipeline, not a measurement of a model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from classifier.data import sha256_file

BOX = "0.5120 0.4392 0.0780 0.1750"


def _write_source(root: Path, rows: list[dict[str, str]], fixtures_dir: Path) -> None:
    for row in rows:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures_dir / row.pop("name"), root / row["path"])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path, labelled: dict) -> list[Path]:
    base = tmp_path_factory.mktemp("sources")
    dirs = {
        "kaggle": base / "bone-fracture-xray",
        "fracatlas": base / "fracatlas",
        "boxes": base / "bone-fracture-boxes",
    }
    rows: dict[str, list[dict[str, str]]] = {name: [] for name in dirs}
    for split in ("train", "val", "test"):
        for name, (source, label) in sorted(labelled.items()):
            row = {
                "name": name,
                "sha256": sha256_file(fixtures_dir / name),
                "path": f"{split}/{label}/{name}",
                "label": label,
                "split": split,
                "cluster": f"{split}-{name}",
                "region": "hand",
                "hardware": "0",
                "fracture_boxes": BOX if "IMG0000480" in name else "",
            }
            rows[source].append(row)
            if "IMG0000480" in name:  # the boxes source: fractured images with boxes only
                rows["boxes"].append(dict(row))
    for source, path in dirs.items():
        _write_source(path, rows[source], fixtures_dir)
    return list(dirs.values())


def test_the_v2_recipe_trains_and_releases_a_model_with_bands_boxes_and_a_report(
    three_sources: list[Path], tmp_path: Path
) -> None:
    from classifier import release, train
    from classifier.card import read_card
    from classifier.predict import OperatingPoints, Predictor

    data_args = [arg for path in three_sources for arg in ("--data", str(path))]
    run = tmp_path / "run"
    assert train.main([*data_args, "--arch", "lite0det", "--size", "64", "--epochs", "1", "--max-steps", "1",
                       "--batch-size", "4", "--from-scratch", "--augment", "strong", "--balance-sources",
                       "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--verbose", "0"]) == 0  # fmt: skip
    history = json.loads((run / "history.json").read_text())
    assert history[0]["epoch"] == 1 and history[0]["cell_loss"] > 0 and "fracatlas_pointing" in history[0]
    assert read_card(run / "card.json")["training"]["image_loss_sources"] == ["fracatlas", "kaggle"]

    out = tmp_path / "model"
    assert release.main(["--run", str(run), "--out", str(out), *data_args, "--n-boot", "20", "--train-every", "1",
                         "--cache-dir", str(tmp_path / "cache")]) == 0  # fmt: skip
    card = read_card(out / "card.json")
    points = OperatingPoints.from_card(card)  # refuses out-of-order points
    assert card["threshold"] == points.sensitive
    assert card["calibration"]["method"] == "platt" and card["calibration"]["weights"] == "1 / cluster size"
    assert set(card["operating_points"]["bands"]) == {"fracatlas", "kaggle"}
    assert {"threshold", "validated", "validation"} <= set(card["boxes"])
    assert card["ood"]["method"] == "pca_mahalanobis" and len(card["ood"]["centroid"]) == 1280
    assert len(card["ood"]["components"]) == len(card["ood"]["variances"]) <= 64
    assert len(card["reference"]["intensity"]["fractions"]) == 16
    assert card["intended_use"]["modalities"] == ["DX", "CR", "DR"]
    test = card["metrics"]["test"]
    assert set(test["sources"]) == {"fracatlas", "kaggle"} and set(test["localisation"]) == {
        "fracatlas",
        "boxes",
    }
    report = (out / "report.md").read_text()
    assert "## Goals (test splits)" in report and "pointing game" in report
    for figure in ("roc.png", "reliability.png", "froc.png", "boxes-fracatlas.png"):
        assert (out / "figures" / figure).read_bytes().startswith(b"\x89PNG")

    predictor = Predictor.load(out)
    assert predictor.thresholds == points and predictor.has_cells and predictor.has_embedding
