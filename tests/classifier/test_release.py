"""The v2 recipe end to end on the fixture images: `classifier.train --arch lite0det` (one step, random
backbone), then `classifier.release` (calibration, operating points, box threshold, references, test figures,
card and report). A software test of the pipeline, not a measurement of a model."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest

from classifier.data import sha256_file

BOX = "0.5120 0.4392 0.0780 0.1750"
# One test process for the whole module (make test-unit's --dist loadgroup): its fixtures train and
# cross-validate once, not once per process. Training steps run eagerly but for the release fixture's.
pytestmark = [pytest.mark.xdist_group("release"), pytest.mark.usefixtures("eager_training")]


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


class Released(TypedDict):
    run: Path  # the training run
    out: Path  # the released model
    cache: Path
    data_args: list[str]  # --data DIR for each source


@pytest.fixture(scope="module")
def released(
    three_sources: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
    graph_functions: Callable[[], AbstractContextManager[None]],
) -> Released:
    """`classifier.train --arch lite0det` (one step, random backbone), then `classifier.release` on val,
    with graphs built as in real training."""
    from classifier import release, train

    base = tmp_path_factory.mktemp("v2")
    data_args = [arg for path in three_sources for arg in ("--data", str(path))]
    run, out, cache = base / "run", base / "model", base / "cache"
    with graph_functions():
        assert train.main([*data_args, "--arch", "lite0det", "--size", "64", "--epochs", "1", "--max-steps", "1",
                           "--batch-size", "4", "--from-scratch", "--augment", "strong", "--balance-sources",
                           "--out", str(run), "--cache-dir", str(cache), "--verbose", "0"]) == 0  # fmt: skip
        assert release.main(["--run", str(run), "--out", str(out), *data_args, "--n-boot", "20",
                             "--train-every", "1", "--cache-dir", str(cache)]) == 0  # fmt: skip
    return Released(run=run, out=out, cache=cache, data_args=data_args)


def test_the_v2_recipe_trains_and_releases_a_model_with_bands_boxes_and_a_report(
    released: Released,
) -> None:
    from classifier.card import read_card
    from classifier.predict import OperatingPoints, Predictor

    run, out = released["run"], released["out"]
    history = json.loads((run / "history.json").read_text())
    assert history[0]["epoch"] == 1 and history[0]["cell_loss"] > 0 and "fracatlas_pointing" in history[0]
    assert read_card(run / "card.json")["training"]["image_loss_sources"] == ["fracatlas", "kaggle"]
    card = read_card(out / "card.json")
    points = OperatingPoints.from_card(card)  # refuses out-of-order points
    assert card["threshold"] == points.sensitive
    assert card["calibration"]["method"] == "platt" and card["calibration"]["weights"] == "1 / cluster size"
    assert set(card["operating_points"]["bands"]) == {"fracatlas", "kaggle"}
    assert {"threshold", "validated", "validation"} <= set(card["boxes"])
    assert card["ood"]["method"] == "pca_mahalanobis" and len(card["ood"]["centroid"]) == 1280
    assert card["ood"]["threshold_in_sample"] is False and card["boxes"]["carried_from"] is None
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


@pytest.fixture(scope="module")
def cross_validated(released: Released, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classifier import train

    run = tmp_path_factory.mktemp("cv") / "cv"
    assert train.main([*tiny_cv_args(released, run), "--cv-tta", "none", "flip", "rot4", "--cv-test"]) == 0
    return run


def tiny_cv_args(released: Released, out: Path) -> list[str]:
    """A 2-fold cross-validation of the lite0det recipe at 64 px, one step per fold."""
    return [*released["data_args"], "--arch", "lite0det", "--size", "64", "--epochs", "1", "--max-steps", "1",
            "--batch-size", "4", "--from-scratch", "--balance-sources", "--cv", "2", "--max-held-cluster", "1000",
            "--out", str(out), "--cache-dir", str(released["cache"]), "--verbose", "0"]  # fmt: skip


def test_the_v2_recipe_cross_validates_by_cluster_with_out_of_fold_logits_per_tta_mode(
    three_sources: list[Path], cross_validated: Path
) -> None:
    from classifier.scoring import read_predictions

    run = cross_validated
    rows = [row for k in (0, 1) for row in read_predictions(run / f"oof-fold{k}.csv")]
    # Every train and val image is held out exactly once, test never.
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) and {row["split"] for row in rows} == {"train", "val"}
    pool = [p for src in three_sources for p in (src / "manifest.csv").read_text().splitlines()[1:]]
    assert len(rows) == sum(",test," not in line for line in pool)
    for row in rows:
        assert {"logit_none", "logit_flip", "logit_rot4", "cell_max", "fold"} <= set(row)
    # A cluster is never split between folds.
    fold_of: dict[str, set[str]] = {}
    for row in rows:
        fold_of.setdefault(row["cluster"], set()).add(row["fold"])
    assert all(len(f) == 1 for f in fold_of.values())
    summary = json.loads((run / "cv_summary.json").read_text())
    assert set(summary["seconds_per_fold"]) == {"0", "1"} and "rot4" in summary["fold0"]
    # Each fold model's localisation on its held-out boxes, and (--cv-test) its test figures beside them.
    assert set(summary["fold0"]["localisation"]) <= {"fracatlas_pointing", "boxes_pointing"}
    assert summary["fold0"]["localisation"] and all(
        0 <= v <= 1 for v in summary["fold0"]["localisation"].values()
    )
    for k in (0, 1):
        test_rows = read_predictions(run / f"test-fold{k}.csv")
        assert {row["split"] for row in test_rows} == {"test"} and "cell_max" in test_rows[0]
        assert len(test_rows) == sum(",test," in line for line in pool)
        assert "fracatlas_auc" in summary[f"fold{k}_test"]["flip"]


def _held_paths(run: Path) -> set[str]:
    """The paths fold 0 of a CV run held out."""
    from classifier.scoring import read_predictions

    return {row["path"] for row in read_predictions(run / "oof-fold0.csv")}


def _fold0_again(released: Released, out: Path, *options: str) -> tuple[set[str], dict]:
    """Fold 0 of the tiny CV again on the same split (--fold-seed 0) with ``options``: what it held out,
    and its summary."""
    from classifier import train

    fold0 = ["--cv-tta", "none", "--folds", "0", "--fold-seed", "0", *options]
    assert train.main([*tiny_cv_args(released, out), *fold0]) == 0
    return _held_paths(out), json.loads((out / "cv_summary.json").read_text())


def test_a_rerun_with_another_training_seed_holds_out_the_same_clusters(
    released: Released, cross_validated: Path, tmp_path: Path
) -> None:
    from classifier.scoring import read_predictions

    held, summary = _fold0_again(released, tmp_path / "rerun", "--seed", "3")
    assert held == _held_paths(cross_validated)
    assert (summary["seed"], summary["fold_seed"]) == (3, 0) and set(summary["seconds_per_fold"]) == {"0"}
    # Seed 3's own split holds out other clusters, so the equality above is the --fold-seed's doing.
    from classifier.data import Record
    from classifier.pipeline import grouped_folds

    pool = [Record(Path(r["path"]), r["source"], r["split"], int(float(r["label"])), r["cluster"])
            for k in (0, 1) for r in read_predictions(cross_validated / f"oof-fold{k}.csv")]  # fmt: skip
    by_seed = {seed: grouped_folds(pool, 2, seed=seed, max_held_cluster=1000) for seed in (0, 3)}
    assert not np.array_equal(by_seed[0], by_seed[3])


def test_per_view_logits_equal_the_serving_graphs_tta_logit() -> None:
    import keras
    import numpy as np

    from classifier.detector import predict_detector
    from classifier.train_detector import view_logits

    # A small core with the detector's three outputs (logit map at stride 32, cells at stride 16,
    # embedding), random and not symmetric, so each view answers differently.
    keras.utils.set_random_seed(0)
    image = keras.Input((64, 64, 1))
    cam = keras.layers.Conv2D(1, 32, strides=32)(image)
    cells = keras.layers.Conv2D(1, 16, strides=16)(image)
    embedding = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 8, strides=8)(image))
    core = keras.Model(image, [cam, cells, embedding])
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    per_mode, plain_cells = view_logits(core, images, ["none", "flip", "rot4"])
    np.testing.assert_allclose(plain_cells, predict_detector(core, images)[1], atol=1e-5)
    for mode in ("none", "flip", "rot4"):
        served, _ = predict_detector(core, images, tta=mode)
        np.testing.assert_allclose(per_mode[mode], served, atol=1e-4)
    assert not np.allclose(per_mode["none"], per_mode["rot4"], atol=1e-3)  # the views do differ


def test_a_release_fits_calibration_bands_and_tta_on_the_out_of_fold_logits(
    released: Released, cross_validated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from classifier import release
    from classifier.bands import fit_bands
    from classifier.card import read_card
    from classifier.data import load_sources
    from classifier.predict import Predictor
    from classifier.scoring import read_predictions

    monkeypatch.setattr(release, "THROUGHPUT_SECONDS", 0.2)
    run, out = tmp_path / "unpacked", tmp_path / "model"
    # From the released model's weights (its run folder is not needed), with the cross-validation's logits.
    assert release.main(["--run", str(run), "--from-model", str(released["out"]), "--out", str(out),
                         *released["data_args"], "--oof", str(cross_validated), "--n-boot", "20",
                         "--train-every", "1", "--tta-candidates", "none", "flip", "rot4",
                         "--version", "v2-again", "--cache-dir", str(released["cache"])]) == 0  # fmt: skip
    card = read_card(out / "card.json")
    assert card["version"] == "v2-again" and Predictor.load(out).version == "v2-again"
    choice = card["tta_choice"]
    assert choice["scored_on"].startswith("out-of-fold") and set(choice["candidates"]) == {
        "none",
        "flip",
        "rot4",
    }
    assert card["architecture"]["tta"] == choice["chosen"]
    assert all(
        r["radiographs_per_s"] > 0 and r["latency_ms_batch1"] > 0 for r in choice["candidates"].values()
    )
    assert card["calibration"]["fitted_on"].startswith("out-of-fold")
    assert card["operating_points"]["fitted_on"] == card["calibration"]["fitted_on"]
    cv = card["cross_validation"]
    assert cv["folds"] == 2 and set(cv["pooled"]) == {"none", "flip", "rot4"}
    assert set(cv["per_fold"]) == {"fold0", "fold1"}

    # The card's calibration is the one fitted on the out-of-fold logits of the chosen mode, not on val.
    rows = [row for k in (0, 1) for row in read_predictions(cross_validated / f"oof-fold{k}.csv")]
    by_path = {str(r.path): r for r in load_sources([Path(a) for a in released["data_args"][1::2]])}
    oof = release.Logits(
        [by_path[row["path"]] for row in rows],
        np.array([float(row[f"logit_{choice['chosen']}"]) for row in rows]),
    )
    calibration, _, points = fit_bands(oof, ["fracatlas", "kaggle"])
    assert card["calibration"]["a"] == pytest.approx(calibration["a"])
    assert card["operating_points"]["sensitive"] == pytest.approx(points["sensitive"])
    report = (out / "report.md").read_text()
    assert "## Grouped cross-validation (2 folds over train + val)" in report
    assert "chosen on the out-of-fold predictions" in report

    # Unpacking kept the weights: rebuilt with the first release's TTA, they answer as it does.
    first = Predictor.load(released["out"])
    release.build_serving(run, None, tmp_path / "again", tta=first.card["architecture"]["tta"])
    batch = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    again = Predictor.load(tmp_path / "again").forward(batch)
    expected = first.forward(batch)
    assert again.cells is not None and expected.cells is not None
    np.testing.assert_allclose(again.logits, expected.logits, atol=1e-5)
    np.testing.assert_allclose(again.cells, expected.cells, atol=1e-5)


def test_the_goals_table_shows_every_earlier_model_in_its_own_column() -> None:
    from classifier.card import read_card
    from classifier.release_report import GOAL_ROWS, goals_rows

    models = Path(__file__).resolve().parents[2] / "models"
    v1, v2 = (
        read_card(models / "lite0-cam-v1" / "card.json"),
        read_card(models / "lite0-det-v2" / "card.json"),
    )
    rows = goals_rows(v2, [v1, v2])
    assert rows[0] == "| figure | `lite0-cam-v1` | `lite0-det-v2` | goal | this model | |"
    assert len(rows) == 2 + len(GOAL_ROWS) and all(row.count("|") == 7 for row in rows)
    auc = next(row for row in rows if row.startswith("| Kaggle ROC-AUC"))
    # v1 kept bare numbers, v2 keeps values with intervals: both read.
    assert "| 0.969 / 0.967 | 0.987 / 0.989 | ≥ 0.97 / ≥ 0.98 | 0.987 / 0.989 | met |" in auc
    doubt = next(row for row in rows if row.startswith("| FracAtlas: images in the Doubt band"))
    assert doubt.endswith("| – | 0.47 | ≤ 25 % | 0.47 | **not met** |")  # v1 had no bands


def test_a_release_can_serve_the_same_weights_at_another_input_size_chosen_on_val(
    released: Released, cross_validated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from classifier import release
    from classifier.card import read_card
    from classifier.predict import Predictor

    monkeypatch.setattr(release, "THROUGHPUT_SECONDS", 0.2)
    run, out = tmp_path / "unpacked", tmp_path / "model"
    # The run trained at 64 px; 64 and 96 are served and scored on val.
    assert release.main(["--run", str(run), "--from-model", str(released["out"]), "--out", str(out),
                         *released["data_args"], "--n-boot", "20", "--train-every", "1",
                         "--input-size-candidates", "64", "96", "--cache-dir", str(released["cache"])]) == 0  # fmt: skip
    card = read_card(out / "card.json")
    choice = card["input_size_choice"]
    assert (
        set(choice["candidates"]) == {"64", "96"} and choice["trained"] == 64 and choice["scored_on"] == "val"
    )
    # The rule: the smallest size within SIZE_TIE of the best mean val AUC (all are within budget here).
    scores = {int(k): r["auc_score"] for k, r in choice["candidates"].items()}
    assert choice["chosen"] == min(
        k for k, v in scores.items() if v >= max(scores.values()) - release.SIZE_TIE
    )
    assert card["input"]["size"] == choice["chosen"] and card["training"]["input_size"] == 64
    assert not list(out.glob(".size-*"))  # the candidates' graphs are not left behind
    # The report says how the serving size was chosen when it is not the trained one.
    served = "(trained at 64 px; served at 96 px by the smallest input" in (out / "report.md").read_text()
    assert served == (choice["chosen"] == 96)
    # Calibration and points come from val at the serving size (the out-of-fold logits were scored at 64).
    assert card["calibration"]["fitted_on"] == "val"

    # The 96-px graph of the same weights: its input, cell grid and preprocessing follow the card's size.
    big = tmp_path / "big"
    release.build_serving(run, None, big, size=96)
    predictor = Predictor.load(big)
    assert predictor.input_spec.size == 96 and read_card(big / "card.json")["training"]["input_size"] == 64
    forward = predictor.forward(np.random.default_rng(0).random((2, 96, 96, 1), dtype=np.float32))
    assert forward.cells is not None and forward.cells.shape[1:3] == (6, 6)
    # Unpacking a release served at another size gives back the trained size.
    release.unpack_released(big, tmp_path / "again")
    assert read_card(tmp_path / "again" / "card.json")["input"]["size"] == 64

    # Out-of-fold logits scored at the trained size cannot calibrate a graph served at another.
    with pytest.raises(SystemExit, match="scored at 64 px, not at the serving 96 px"):
        release.main(["--run", str(run), "--out", str(tmp_path / "refused"), *released["data_args"],
                      "--oof", str(cross_validated), "--input-size", "96", "--cache-dir", str(released["cache"])])  # fmt: skip


def test_refit_boxes_chooses_the_box_rule_again_and_leaves_the_rest_of_the_card(
    released: Released, tmp_path: Path
) -> None:
    from classifier import release
    from classifier.card import read_card, write_card
    from classifier.cells import BoxRule
    from classifier.localisation import BOX_THRESHOLDS, PEAK_DROPS
    from classifier.predict import Predictor

    out = tmp_path / "model"
    shutil.copytree(released["out"], out)
    card = read_card(out / "card.json")
    # An older card: a threshold off the grid and no grouping recorded.
    card["boxes"] = {"threshold": 0.123, "max_boxes": 5, "validated": False, "validation": ""}
    write_card(card, out / "card.json")
    before = read_card(out / "card.json")
    assert Predictor.load(out).box_rule == BoxRule(0.123, None, 5)

    assert release.main(["--refit-boxes", "--run", str(released["run"]), "--out", str(out),
                         *released["data_args"], "--cache-dir", str(released["cache"])]) == 0  # fmt: skip
    after = read_card(out / "card.json")
    rule = BoxRule.from_card(after)
    assert rule.threshold in {float(t) for t in BOX_THRESHOLDS} and rule.peak_drop in PEAK_DROPS
    assert set(after["boxes"]["val_froc"]["curves"]) == {
        "regions" if d is None else f"peak_drop_{d:g}" for d in PEAK_DROPS
    }
    assert Predictor.load(out).box_rule == rule
    assert (
        after["metrics"]["test"]["localisation"]["fracatlas"]["at_box_threshold"]["threshold"]
        == rule.threshold
    )
    for unchanged in ("calibration", "operating_points", "ood", "input", "architecture", "version"):
        assert after[unchanged] == before[unchanged]
    assert after["metrics"]["test"]["sources"] == before["metrics"]["test"]["sources"]
    assert f"- **Boxes**: {rule.describe()}" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["test"]["localisation"]["boxes"]["images"] > 0


def _one_step_run(released: Released, tmp_path: Path, *options: str) -> tuple[dict, tuple[int, ...]]:
    """A 1-step, 64-px detector run with ``options``: its card, and the cell-map grid of the serving graph
    the release rebuilds from that card (the epoch's weights load only into the graph the card describes)."""
    import numpy as np

    from classifier import release, train
    from classifier.card import read_card
    from classifier.predict import Predictor

    run, out = tmp_path / "run", tmp_path / "model"
    assert train.main([*released["data_args"], "--arch", "lite0det", *options, "--size", "64",
                       "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--from-scratch",
                       "--out", str(run), "--cache-dir", str(released["cache"]), "--verbose", "0"]) == 0  # fmt: skip
    release.build_serving(run, None, out)
    forward = Predictor.load(out).forward(np.random.default_rng(0).random((1, 64, 64, 1), dtype=np.float32))
    assert forward.cells is not None
    return read_card(run / "card.json"), tuple(forward.cells.shape[1:3])


def test_a_lite1_run_trains_and_its_serving_graph_is_rebuilt_from_its_card(
    released: Released, tmp_path: Path
) -> None:
    from classifier import release

    card, cell_grid = _one_step_run(released, tmp_path, "--backbone", "lite1")
    assert card["training"]["recipe"]["backbone"] == "lite1"
    assert (
        card["architecture"]["description"].startswith("EfficientNet-Lite1")
        and "block 14" in (card["architecture"]["description"])
    )
    # The release rebuilt a Lite1 graph (21 blocks) from the card, or the weights would not have loaded.
    assert cell_grid == (4, 4)
    # Cards from before the option name no backbone: they were Lite0.
    del card["training"]["recipe"]["backbone"]
    assert release.card_backbone(card) == "lite0"


def test_a_run_with_8_pixel_cells_releases_a_serving_graph_with_the_finer_grid(
    released: Released, tmp_path: Path
) -> None:
    from classifier import release

    card, cell_grid = _one_step_run(released, tmp_path, "--cell-stride", "8")
    assert card["training"]["recipe"]["cell_stride"] == 8 and card["architecture"]["cell_stride"] == 8
    assert "block 4 (stride 8)" in card["architecture"]["description"]
    # The release rebuilt the graph with the stride-8 head from the card: an 8 x 8 cell map at 64 px.
    assert cell_grid == (8, 8)
    # Cards from before the option name no cell stride: they were 16.
    del card["training"]["recipe"]["cell_stride"]
    assert release.card_cell_stride(card) == 16


def test_a_share_of_one_sources_clusters_is_kept_whole_and_the_other_sources_untouched() -> None:
    from classifier.data import Record
    from classifier.train_detector import keep_share_of_clusters

    # FracAtlas: ten clusters of two images each; Kaggle: four clusters of three.
    records = [Record(Path(f"fa{c}-{i}.jpg"), "fracatlas", "train", c % 2, f"fa{c}") for c in range(10)
               for i in range(2)] + [Record(Path(f"k{c}-{i}.jpg"), "kaggle", "train", c % 2, f"k{c}")
                                     for c in range(4) for i in range(3)]  # fmt: skip
    indices = np.arange(len(records))
    kept = keep_share_of_clusters(records, indices, {"fracatlas": 0.3}, seed=5)
    fracatlas = [records[i] for i in kept if records[i].source == "fracatlas"]
    assert len({r.cluster for r in fracatlas}) == 3 and len(fracatlas) == 6  # whole clusters, a share of 0.3
    assert sum(records[i].source == "kaggle" for i in kept) == 12
    assert np.array_equal(kept, keep_share_of_clusters(records, indices, {"fracatlas": 0.3}, seed=5))
    others = {records[i].cluster for s in range(1, 6) for i in keep_share_of_clusters(
        records, indices, {"fracatlas": 0.3}, seed=s)}  # fmt: skip
    assert len(others) > 3 + 4  # another seed draws other clusters
    # A learning curve's smaller share lies inside its larger one under the same seed: each step only removes.
    for seed in range(5):
        quarter, half = (set(keep_share_of_clusters(records, indices, {"fracatlas": share}, seed=seed))
                         for share in (0.25, 0.5))  # fmt: skip
        assert quarter < half
    # Only among the indices given (a fold's training part), and nothing to draw from is an error.
    assert set(keep_share_of_clusters(records, indices[:8], {"fracatlas": 0.5}, seed=0)) < set(range(8))
    with pytest.raises(ValueError, match="no training clusters"):
        keep_share_of_clusters(records, indices[:8], {"kaggle": 0.5}, seed=0)
    assert np.array_equal(keep_share_of_clusters(records, indices, {}, seed=0), indices)
    # A share of 0 trains without the source (what it adds to the others), every other source untouched.
    without = keep_share_of_clusters(records, indices, {"kaggle": 0.0}, seed=0)
    assert {records[i].source for i in without} == {"fracatlas"} and len(without) == 20
    assert len(keep_share_of_clusters(records, indices, {"kaggle": 0.01}, seed=0)) == 20 + 3  # one cluster


def test_a_learning_curve_point_trains_on_a_share_and_holds_out_the_same_images(
    released: Released, cross_validated: Path, tmp_path: Path
) -> None:
    from classifier import train
    from classifier.scoring import read_predictions

    held, summary = _fold0_again(released, tmp_path / "half", "--cv-train-share", "kaggle=0.5")
    assert held == _held_paths(cross_validated)
    full = len(read_predictions(cross_validated / "oof-fold1.csv"))  # fold 0 trains on fold 1's images
    assert summary["train_share"] == {"kaggle": 0.5} and 0 < summary["train_images"]["0"] < full
    assert summary["steps_per_epoch"] == {"0": 1}  # --max-steps 1 caps the full fold's steps
    for wrong in (["--cv", "3", "--cv-train-share", "kaggle=1.5"], ["--cv", "3", "--cv-train-share", "kaggle=-0.1"], ["--cv-train-share", "kaggle=0.5"],
                  ["--cv", "3", "--arch", "lite0", "--cv-train-share", "kaggle=0.5"], ["--cv", "3", "--cv-train-share", "kaggle"]):  # fmt: skip
        with pytest.raises(SystemExit):
            train.parse_args(["--data", "d", "--out", "o", *wrong])
    assert train.parse_args(
        ["--data", "d", "--out", "o", "--cv", "3", "--cv-train-share", "kaggle=0.5"]
    ).cv_train_share == {"kaggle": 0.5}
    assert train.parse_args(
        ["--data", "d", "--out", "o", "--cv", "3", "--cv-train-share", "kaggle=0"]
    ).cv_train_share == {"kaggle": 0.0}


def test_a_final_fit_on_train_and_val_is_released_with_nothing_fitted_on_val(
    released: Released, cross_validated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classifier import release, train
    from classifier.card import read_card
    from classifier.cells import BoxRule
    from classifier.predict import Predictor

    monkeypatch.setattr(release, "THROUGHPUT_SECONDS", 0.2)
    run, out = tmp_path / "final", tmp_path / "model"
    assert train.main([*released["data_args"], "--arch", "lite0det", "--size", "64", "--epochs", "2",
                       "--max-steps", "1", "--batch-size", "4", "--from-scratch", "--balance-sources",
                       "--train-on-val", "--out", str(run), "--cache-dir", str(released["cache"]),
                       "--verbose", "0"]) == 0  # fmt: skip
    run_card = read_card(run / "card.json")
    assert run_card["training_data"]["splits_trained_on"] == ["train", "val"]
    first = read_card(released["run"] / "card.json")["training_data"]["counts"]
    assert run_card["training_data"]["counts"] == first  # the same train + val images, all trained on
    # No val to choose an epoch on: the last one is kept, and nothing was scored between epochs.
    history = json.loads((run / "history.json").read_text())
    assert run_card["training"]["best_epoch"] == 2 and "fracatlas_auc" not in history[-1]
    assert not (run / "val_predictions.csv").exists()
    with pytest.raises(SystemExit):  # a final fit is one fit: cross-validation holds val out by design
        train.main([*tiny_cv_args(released, tmp_path / "cv"), "--train-on-val"])

    common = ["--run", str(run), "--out", str(out), *released["data_args"], "--n-boot", "20",
              "--train-every", "1", "--cache-dir", str(released["cache"])]  # fmt: skip
    # Without out-of-fold logits and a box rule to carry over, it would fit on val, which it trained on.
    with pytest.raises(SystemExit, match="trained on train \\+ val"):
        release.main([*common, "--oof", str(cross_validated)])
    assert release.main([*common, "--oof", str(cross_validated), "--boxes-from", str(released["out"])]) == 0
    card, source = read_card(out / "card.json"), read_card(released["out"] / "card.json")
    assert card["calibration"]["fitted_on"].startswith("out-of-fold")
    assert card["operating_points"]["fitted_on"] == card["calibration"]["fitted_on"]
    assert Predictor.load(out).box_rule == BoxRule.from_card(source)
    assert card["boxes"]["fitted_on"].endswith(f"by {source['version']}, carried over")
    assert card["boxes"]["carried_from"] == source["version"]
    assert card["ood"]["threshold_in_sample"] is True and "in-sample" in card["ood"]["fitted_on"]
    assert card["calibration_check"]["val_ece_per_source"] is None
    oof_images = sum(
        1
        for k in (0, 1)
        for line in (cross_validated / f"oof-fold{k}.csv").read_text().splitlines()[1:]
        if ",boxes," not in line
    )
    assert card["reference"]["images"] == oof_images  # the score reference: out-of-fold, not val
    assert "box rule carried over from" in card["status"]
    assert not (out / "predictions-val.csv").exists() and (out / "predictions-test.csv").exists()
    report = (out / "report.md").read_text()
    assert "`train` + `val` (a final fit: no val held out)" in report
    assert f"FracAtlas val by {source['version']}, carried over" in report
    assert "no held-out val check" in report and "val, in-sample" in report
    # A box rule chosen again on val would be chosen on images the weights trained on.
    with pytest.raises(SystemExit, match="in-sample"):
        release.main(["--refit-boxes", "--run", str(run), "--out", str(out), *released["data_args"],
                      "--cache-dir", str(released["cache"])])  # fmt: skip
