"""classifier.experiments: recipe runs compared on the folds they share, paired against a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifier import experiments
from classifier.data import Record
from classifier.scoring import write_predictions

# A recipe stored before the consistency option existed: it trained without it (the default, 0).
BASE_RECIPE = {"size": 320, "cluster_power": 0.5, "tta": "flip", "augment": {"rotation": 45.0, "zoom": 0.2}}


def held_out(seed: int, *, noise: float) -> tuple[list[Record], np.ndarray]:
    """Two sources, both classes; kaggle in clusters of three copies. Logits = label signal + noise."""
    rng = np.random.default_rng(seed)
    records, signal = [], []
    for i in range(60):
        label = i % 2
        records.append(
            Record(
                Path(f"fa/{i}.png"), "fracatlas", "train", label, f"fracatlas:{i}", hardware=int(i % 7 == 0)
            )
        )
        signal.append(label)
    for c in range(30):
        for copy in range(3):
            records.append(Record(Path(f"kg/{c}-{copy}.png"), "kaggle", "val", c % 2, f"kaggle:{c}"))
            signal.append(c % 2)
    logits = 2.0 * np.array(signal, float) - 1.0 + noise * rng.normal(size=len(records))
    return records, logits


def write_run(path: Path, recipe: dict, noise: float, *, test: bool) -> Path:
    path.mkdir(parents=True)
    records, logits = held_out(1, noise=noise)
    write_predictions(path / "oof-fold0.csv", records, {"logit_flip": logits, "fold": np.zeros(len(records))})
    summary = {"recipe": recipe, "folds": 3, "seed": 0, "seconds_per_fold": {"0": 1800.0},
               "fold0": {"localisation": {"fracatlas_pointing": 0.5, "boxes_pointing": 0.25}}}  # fmt: skip
    if test:
        test_records, test_logits = held_out(2, noise=noise)
        write_predictions(path / "test-fold0.csv", test_records, {"logit_flip": test_logits})
        summary["fold0_test"] = {"localisation": {"fracatlas_pointing": 0.4, "boxes_pointing": 0.3}}
    (path / "cv_summary.json").write_text(json.dumps(summary))
    return path


def with_summary(path: Path, **fields: object) -> Path:
    """The run at ``path`` with ``fields`` set in its cv_summary.json (another seed, a training share)."""
    summary = json.loads((path / "cv_summary.json").read_text())
    (path / "cv_summary.json").write_text(json.dumps({**summary, **fields}))
    return path


def test_a_better_recipe_shows_a_positive_paired_difference_and_its_test_figures(tmp_path: Path) -> None:
    baseline = experiments.read_experiment(write_run(tmp_path / "base", BASE_RECIPE, noise=2.5, test=False))
    better_recipe = {
        **BASE_RECIPE,
        "cluster_power": 1.0,
        "tta": "rot4",
        "augment": {"rotation": 45.0, "zoom": 0.3},
    }
    better_recipe["consistency_weight"] = 0.0
    better = experiments.read_experiment(
        f"cp1={write_run(tmp_path / 'cp-one', better_recipe, noise=0.5, test=True)}"
    )

    result = experiments.compare(baseline, [better], "flip", n_boot=200)
    base_row, better_row = result["experiments"]
    assert base_row["changes"] == "the baseline recipe"
    # The TTA is a release choice, not a recipe option; nested augmentation changes are named.
    assert better_row["changes"] == "augment (zoom: 0.2 -> 0.3); cluster_power: 0.5 -> 1.0"

    same = base_row["folds"]["0"]["vs_baseline"]["fracatlas"]
    assert same["value"] == 0.0 and same["images"] == 60
    for source in ("fracatlas", "kaggle"):
        delta = better_row["folds"]["0"]["vs_baseline"][source]
        assert delta["value"] > 0.1 and 0 < delta["low"] <= delta["value"] <= delta["high"]

    fold = better_row["folds"]["0"]
    assert fold["minutes"] == 30.0 and fold["localisation"]["boxes_pointing"] == 0.25
    # Points fitted on the held-out part: sensitive at or below specific; kaggle's copies are scored for
    # one band; the cleaner logits leave fewer radiographs in Doubt than the noisy baseline's.
    assert fold["points"]["sensitive"] <= fold["points"]["specific"]
    assert (
        0.0 <= fold["bands"]["kaggle"]["one_band"] <= 1.0 and fold["bands"]["fracatlas"]["one_band"] is None
    )
    base_fold = base_row["folds"]["0"]
    for source in ("fracatlas", "kaggle"):
        assert fold["bands"][source]["doubt_share"] < base_fold["bands"][source]["doubt_share"]
    # Test figures only where the run scored test (the baseline here did not).
    assert "test" not in base_fold
    test = fold["test"]
    assert set(test) == {"fracatlas", "kaggle"} and test["kaggle"]["auc"]["value"] > 0.9
    assert "auc_no_hardware" in test["fracatlas"] and "one_band" in test["kaggle"]
    assert fold["test_localisation"]["fracatlas_pointing"] == 0.4

    text = experiments.render(result)
    assert text.count("| cp1 |") == 4  # one cross-validated row, three test rows (two sources + boxes)
    assert "| base | the baseline recipe | 1 | 30 |" in text and "| baseline | baseline |" in text
    assert "| +0." in text.split("| cp1 |")[1]  # the better run's paired differences


def test_the_command_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_run(tmp_path / "base", BASE_RECIPE, noise=1.0, test=True)
    notes = tmp_path / "notes.md"
    notes.write_text("## What was tried\n")
    out = tmp_path / "out"
    assert (
        experiments.main(
            ["--baseline", str(base), "--out", str(out), "--n-boot", "50", "--notes", str(notes)]
        )
        == 0
    )
    assert json.loads((out / "experiments.json").read_text())["baseline"] == "base"
    text = (out / "experiments.md").read_text()
    assert text.startswith("# Recipe experiments") and text.endswith("## What was tried\n")
    assert "Recipe experiments" in capsys.readouterr().out


def write_folds(path: Path, recipe: dict, noise: float, folds: int) -> Path:
    """A run with ``folds`` held-out parts, each of different radiographs (``held_out``'s, renamed)."""
    path.mkdir(parents=True)
    summary: dict = {"recipe": recipe, "folds": folds, "seed": 0, "seconds_per_fold": {}}
    for k in range(folds):
        records, logits = held_out(10 + k, noise=noise)
        records = [Record(r.path.with_name(f"f{k}-{r.path.name}"), r.source, r.split, r.label,
                          f"{r.cluster}-f{k}", hardware=r.hardware) for r in records]  # fmt: skip
        write_predictions(
            path / f"oof-fold{k}.csv", records, {"logit_flip": logits, "fold": np.full(len(records), k)}
        )
        summary["seconds_per_fold"][str(k)] = 600.0 * (k + 1)
        summary[f"fold{k}"] = {"localisation": {"fracatlas_pointing": 0.2 * (k + 1), "boxes_pointing": 0.1}}
    (path / "cv_summary.json").write_text(json.dumps(summary))
    return path


def test_runs_sharing_several_folds_get_a_pooled_row_over_all_their_held_out_images(tmp_path: Path) -> None:
    baseline = experiments.read_experiment(write_folds(tmp_path / "base", BASE_RECIPE, noise=2.5, folds=3))
    # The candidate ran two of the baseline's three folds: it is pooled over those two only.
    better = experiments.read_experiment(
        write_folds(tmp_path / "better", {**BASE_RECIPE, "size": 384}, noise=0.5, folds=2)
    )

    result = experiments.compare(baseline, [better], "flip", n_boot=200)
    base_row, better_row = result["experiments"]
    assert set(base_row["folds"]) == {"0", "1", "2", "all"} and set(better_row["folds"]) == {"0", "1", "all"}
    pooled = better_row["folds"]["all"]
    # Every held-out image of the shared folds once: 60 FracAtlas images per fold.
    assert pooled["vs_baseline"]["fracatlas"]["images"] == 120
    assert pooled["vs_baseline"]["fracatlas"]["low"] > 0
    assert pooled["minutes"] == 30.0
    assert pooled["localisation"] == {
        "fracatlas_pointing": pytest.approx(0.3),
        "boxes_pointing": pytest.approx(0.1),
    }
    # In one order on every rebuild, so a rebuilt experiments.json differs only where a figure does.
    assert list(pooled["localisation"]) == ["boxes_pointing", "fracatlas_pointing"]
    assert pooled["points"]["sensitive"] <= pooled["points"]["specific"] and "test" not in pooled
    # The pooled AUC is the AUC of the pooled logits, not a mean of the folds' AUCs.
    both = [row for k in (0, 1) for row in better.held[k]]
    expected = experiments.source_metrics(
        experiments.rows_to_logits(both, "flip").records, experiments.rows_to_logits(both, "flip").logits
    )["fracatlas_auc"]
    assert pooled["auc"]["fracatlas_auc"] == pytest.approx(expected)

    table = experiments.render(result)
    assert "| better | size: 320 -> 384 | **all** | 30 |" in table
    assert table.count("**all**") == 3  # the explanation, and one row per run


def calibration_run(path: Path, *, kaggle_scale: float) -> experiments.Experiment:
    """Three folds whose labels follow sigmoid(z) in both sources; kaggle's stored logit is z * scale."""
    rng = np.random.default_rng(7)
    path.mkdir(parents=True)
    for k in range(3):
        records, logits = [], []
        for i in range(900):
            source = "fracatlas" if i < 450 else "kaggle"
            z = rng.normal(0.0, 2.5)
            label = int(rng.random() < 1 / (1 + np.exp(-z)))
            records.append(Record(Path(f"{source}/{k}-{i}.png"), source, "train", label, f"{source}:{k}-{i}"))
            logits.append(z * (kaggle_scale if source == "kaggle" else 1.0))
        write_predictions(
            path / f"oof-fold{k}.csv", records, {"logit_flip": np.array(logits), "fold": np.full(900, k)}
        )
    (path / "cv_summary.json").write_text(json.dumps({"recipe": BASE_RECIPE, "seconds_per_fold": {}}))
    return experiments.read_experiment(path)


def test_recalibration_screen_cross_fits_each_map_and_cannot_mend_sources_on_different_scales(
    tmp_path: Path,
) -> None:
    same_scale = experiments.recalibration_screen(
        calibration_run(tmp_path / "same", kaggle_scale=1.0), "flip"
    )
    assert [(r["method"], r["cluster_power"]) for r in same_scale] == list(experiments.CALIBRATORS)
    # One logit scale: every map, fitted on the other folds, is calibrated on both sources.
    for row in same_scale:
        assert row["fracatlas"]["ece"] < 0.05 and row["kaggle"]["ece"] < 0.05, row
    # Kaggle's logits eight times too spread: no single monotone map of the logit serves both sources.
    apart = experiments.recalibration_screen(calibration_run(tmp_path / "apart", kaggle_scale=8.0), "flip")
    for row in apart:
        assert max(row["fracatlas"]["ece"], row["kaggle"]["ece"]) > 0.06, row

    table = "\n".join(experiments.render_recalibration(apart, "base"))
    assert "| isotonic | 0.5 |" in table and "fracatlas ECE image / cluster" in table


def test_an_ensemble_is_the_mean_of_its_members_logits_on_the_images_they_share(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", BASE_RECIPE, noise=2.5, test=True)
    rerun = write_run(tmp_path / "rerun", BASE_RECIPE, noise=2.5, test=True)
    with_summary(rerun, seed=7)
    # The rerun scored its held-out images with other noise (another training run of the recipe).
    records, _ = held_out(1, noise=0.0)
    rerun_logits = held_out(5, noise=2.5)[1]
    write_predictions(
        rerun / "oof-fold0.csv",
        records[:-3],
        {"logit_flip": rerun_logits[:-3], "fold": np.zeros(len(records) - 3)},
    )

    ensemble = experiments.ensemble_experiment(f"pair={base}:flip+{rerun}:flip", "flip")
    assert ensemble.name == "pair" and set(ensemble.held) == {0} and set(ensemble.test) == {0}
    # Only the images both members scored; each logit the members' mean.
    base_logits = {row["path"]: float(row["logit_flip"]) for row in experiments.read_experiment(base).held[0]}
    assert len(ensemble.held[0]) == len(records) - 3
    row = ensemble.held[0][10]
    assert float(row["logit_flip"]) == pytest.approx(
        (base_logits[row["path"]] + rerun_logits[10]) / 2, abs=1e-5
    )
    assert ensemble.summary["seconds_per_fold"] == {"0": 3600.0}

    result = experiments.compare(
        experiments.read_experiment(base), [experiments.read_experiment(rerun), ensemble], "flip", n_boot=100
    )
    _, rerun_row, ensemble_row = result["experiments"]
    assert rerun_row["changes"] == "training seed: 0 -> 7"
    assert ensemble_row["changes"] == "mean of base:flip + rerun:flip"
    # Averaging two noisy runs ranks better than either alone; no cell head, so no pointing figure.
    assert ensemble_row["folds"]["0"]["vs_baseline"]["kaggle"]["value"] > 0
    assert ensemble_row["folds"]["0"]["localisation"] == {} and ensemble_row["folds"]["0"]["minutes"] == 60.0


def test_a_learning_curve_point_is_described_by_the_share_it_trained_on(tmp_path: Path) -> None:
    base = experiments.read_experiment(write_run(tmp_path / "base", BASE_RECIPE, noise=2.5, test=False))
    half = with_summary(
        write_run(tmp_path / "half", BASE_RECIPE, noise=2.5, test=False), train_share={"fracatlas": 0.5}
    )
    both = with_summary(
        write_run(tmp_path / "both", {**BASE_RECIPE, "size": 384}, noise=2.5, test=False),
        seed=7,
        train_share={"fracatlas": 0.5},
    )

    result = experiments.compare(
        base, [experiments.read_experiment(half), experiments.read_experiment(both)], "flip", n_boot=20
    )
    _, half_row, both_row = result["experiments"]
    # Same recipe, less data: the row says which source's clusters were cut, not "the baseline recipe".
    assert half_row["changes"] == "fracatlas training clusters: 1 -> 0.5"
    assert (
        both_row["changes"]
        == "size: 320 -> 384; training seed: 0 -> 7; fracatlas training clusters: 1 -> 0.5"
    )


def test_a_learning_curve_gives_each_share_its_auc_and_each_halving_its_paired_cost(tmp_path: Path) -> None:
    # Less data, noisier logits: the full run scored three folds, the half two, the quarter one.
    full = write_folds(tmp_path / "full", BASE_RECIPE, noise=0.5, folds=3)
    half = with_summary(
        write_folds(tmp_path / "half", BASE_RECIPE, noise=1.5, folds=2), train_share={"fracatlas": 0.5}
    )
    quarter = with_summary(
        write_folds(tmp_path / "quarter", BASE_RECIPE, noise=3.0, folds=1), train_share={"fracatlas": 0.25}
    )
    # In any order on the command line: the curve runs from the largest share down.
    runs = [experiments.read_experiment(f"{name}={path}") for name, path in
            (("quarter", quarter), ("full", full), ("half", half))]  # fmt: skip

    curve = experiments.learning_curve(runs, "fracatlas", "flip", n_boot=100)

    points = {(p["share"], p["fold"]): p for p in curve["points"]}
    assert set(points) == {(1.0, 0), (1.0, 1), (1.0, 2), (0.5, 0), (0.5, 1), (0.25, 0)}
    assert points[(1.0, 0)]["run"] == "full" and points[(1.0, 0)]["images"] == 60  # FracAtlas images only
    assert (
        points[(1.0, 0)]["auc"]["value"]
        > points[(0.5, 0)]["auc"]["value"]
        > points[(0.25, 0)]["auc"]["value"]
    )
    auc = points[(0.5, 1)]["auc"]
    assert auc["low"] <= auc["value"] <= auc["high"]
    # A step only where both shares scored the fold; its cost is paired on the same held-out images.
    steps = {(s["from"], s["to"], s["fold"]): s["difference"] for s in curve["steps"]}
    assert set(steps) == {(1.0, 0.5, 0), (1.0, 0.5, 1), (0.5, 0.25, 0)}
    first = steps[(1.0, 0.5, 0)]
    assert first["value"] == pytest.approx(
        points[(0.5, 0)]["auc"]["value"] - points[(1.0, 0)]["auc"]["value"]
    )
    assert first["high"] < 0 and first["images"] == 60


def test_the_learning_curve_script_prints_its_figures_and_draws_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    script = Path(__file__).parents[2] / "models" / "experiments" / "learning_curve.py"
    spec = importlib.util.spec_from_file_location("learning_curve", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = write_folds(tmp_path / "full", BASE_RECIPE, noise=0.5, folds=1)
    half = with_summary(
        write_folds(tmp_path / "half", BASE_RECIPE, noise=2.0, folds=1), train_share={"fracatlas": 0.5}
    )
    out = tmp_path / "out"

    assert module.main(["--run", f"full={full}", "--run", f"half={half}", "--out", str(out)]) == 0

    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("fold 1, share 1 (full): fracatlas AUC ")
    assert printed[2].startswith("fold 1, share 1 -> 0.5: -")
    assert json.loads((out / "learning-curve.json").read_text())["steps"][0]["to"] == 0.5
    assert (out / "learning-curve.png").read_bytes().startswith(b"\x89PNG")
