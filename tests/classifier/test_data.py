"""classifier.data: folder and manifest loading, grouped folds, the image cache, the training pipeline."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier.data import (
    label_from_name,
    load_images,
    load_kaggle_original_split,
    load_source,
    load_sources,
    sha256_file,
)
from classifier.decoding import decode_grayscale
from classifier.pipeline import AugmentSpec, grouped_folds, sample_weights, training_dataset
from classifier.preprocessing import InputSpec, letterbox_uint8


def make_folder_layout(root: Path, fixtures_dir: Path, labelled: dict[str, tuple[str, str]]) -> Path:
    """split/label/image with Kaggle's folder names, the fixtures spread over three splits."""
    names = sorted(labelled)
    for i, name in enumerate(names):
        split = ("train", "train", "val", "test")[i % 4]
        label = "fractured" if labelled[name][1] == "fractured" else "not fractured"
        dest = root / split / label
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures_dir / name, dest / name)
    return root


def test_labels_from_folder_names() -> None:
    assert label_from_name("fractured") == 1 and label_from_name("Fractured") == 1
    assert label_from_name("not fractured") == 0 and label_from_name("not_fractured") == 0
    assert label_from_name("normal") == 0
    with pytest.raises(ValueError, match="cannot tell"):
        label_from_name("maybe")


def test_it_loads_a_split_label_image_folder(tmp_path: Path, fixtures_dir: Path, labelled: dict) -> None:
    root = make_folder_layout(tmp_path / "mine", fixtures_dir, labelled)
    records = load_source(root, hash_files=True)
    assert len(records) == len(labelled)
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(r.source == "mine" for r in records)
    for r in records:
        assert r.label == (1 if labelled[r.path.name][1] == "fractured" else 0)
        assert r.sha256 == sha256_file(r.path) and r.cluster == f"mine:{r.sha256}"


def _write_manifest(root: Path, fixtures_dir: Path, labelled: dict) -> Path:
    rows = []
    for i, name in enumerate(sorted(labelled)):
        source, label = labelled[name]
        split = ("train", "val", "test")[i % 3]
        rel = Path(split) / label / name
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures_dir / name, root / rel)
        boxes = "0.5120 0.4392 0.0780 0.1750" if "IMG0000480" in name else ""
        cluster = "pair1" if name.startswith("kaggle_fractured_") and name[-5].isdigit() else name
        rows.append(
            {
                "sha256": sha256_file(fixtures_dir / name),
                "path": str(rel),
                "label": label,
                "split": split,
                "cluster": cluster,
                "hardware": "1" if "IMG0000480" in name else "0",
                "region": "hand" if source == "fracatlas" else "",
                "fracture_boxes": boxes,
            }
        )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_it_loads_a_manifest_with_clusters_hardware_and_boxes(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    root = _write_manifest(tmp_path / "fracatlas", fixtures_dir, labelled)
    records = {r.path.name: r for r in load_source(root)}
    atlas = records["fracatlas_fractured_IMG0000480.jpg"]
    assert atlas.source == "fracatlas" and atlas.hardware == 1 and atlas.region == "hand"
    assert atlas.boxes == ((0.5120, 0.4392, 0.0780, 0.1750),)
    assert (
        records["kaggle_fractured_1.jpg"].cluster
        == records["kaggle_fractured_2.jpg"].cluster
        == "fracatlas:pair1"
    )


def test_several_sources_load_together_with_unique_clusters(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    a = make_folder_layout(tmp_path / "a", fixtures_dir, labelled)
    b = make_folder_layout(tmp_path / "b", fixtures_dir, labelled)
    records = load_sources([a, b])
    assert {r.source for r in records} == {"a", "b"}
    assert len({r.cluster for r in records}) == len(records)


def test_grouped_folds_keep_clusters_whole_and_classes_spread() -> None:
    from classifier.data import Record

    records = [
        Record(Path(f"{i}.png"), "s" if i < 200 else "t", "train", int(i % 3 == 0), f"c{i // 4}")
        for i in range(300)
    ]
    folds = grouped_folds(records, 3, seed=0)
    assert set(folds.tolist()) == {0, 1, 2}
    for cluster in {r.cluster for r in records}:
        assert len({folds[i] for i, r in enumerate(records) if r.cluster == cluster}) == 1
    for k in range(3):
        held = [records[i] for i in np.flatnonzero(folds == k)]
        assert {r.source for r in held} == {"s", "t"} and {r.label for r in held} == {0, 1}


def test_the_image_cache_is_the_serving_preprocessing(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    root = make_folder_layout(tmp_path / "mine", fixtures_dir, labelled)
    (root / "train" / "fractured" / "broken.jpg").write_bytes(
        (fixtures_dir / "kaggle_truncated.jpg").read_bytes()
    )
    records = load_source(root)
    spec = InputSpec(size=64, clahe=True)
    first = load_images(records, spec, cache_dir=tmp_path / "cache")
    assert len(first.records) == len(records) - 1  # the truncated JPEG is skipped
    again = load_images(records, spec, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, again.images)
    assert [r.path for r in again.records] == [r.path for r in first.records]
    for i, r in enumerate(first.records):
        expected, geometry = letterbox_uint8(decode_grayscale(r.path.read_bytes()), spec)
        np.testing.assert_array_equal(first.images[i], expected)
        assert first.geometries[i] == geometry


def test_sample_weights_balance_classes_within_sources() -> None:
    from classifier.data import ImageSet, Record

    records = [Record(Path(f"{i}"), "s", "train", int(i < 10), f"c{i}") for i in range(40)]
    records += [Record(Path(f"t{i}"), "t", "train", int(i < 5), f"d{i}") for i in range(10)]
    data = ImageSet(records, np.zeros((50, 8, 8), np.uint8), [None] * 50, InputSpec(size=8))  # type: ignore[list-item]
    w = sample_weights(data)
    labels, sources = data.labels, data.sources
    for s in ("s", "t"):
        m = sources == s
        assert w[m & (labels == 1)].sum() == pytest.approx(w[m & (labels == 0)].sum())
    balanced = sample_weights(data, balance_sources=True)
    assert balanced[sources == "s"].sum() == pytest.approx(balanced[sources == "t"].sum())


def test_the_training_pipeline_augments_within_range(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    root = make_folder_layout(tmp_path / "mine", fixtures_dir, labelled)
    data = load_images(load_source(root), InputSpec(size=48))
    strong = AugmentSpec(vflip=True, rot90=True, rotation=30, zoom=0.2, shift=0.1, gamma=0.2)
    iterator = iter(training_dataset(data, batch_size=4, augment=strong, seed=0))
    x, y, w = (t.numpy() for t in next(iterator))
    assert x.shape == (4, 48, 48, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.shape == (4, 1) and set(np.unique(y)) <= {0.0, 1.0} and w.shape == (4,)
    x2 = next(iterator)[0].numpy()
    assert not np.allclose(x, x2)


def test_the_training_pipeline_repeats_its_augmentation_for_one_seed(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    root = make_folder_layout(tmp_path / "mine", fixtures_dir, labelled)
    data = load_images(load_source(root), InputSpec(size=48))
    strong = AugmentSpec(hflip=True, rotation=30, zoom=0.2, shift=0.1, brightness=0.1, contrast=0.1)

    def stream(seed: int) -> list[np.ndarray]:
        iterator = iter(training_dataset(data, batch_size=4, augment=strong, seed=seed))
        return [next(iterator)[0].numpy() for _ in range(40)]

    first = stream(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, stream(0), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, stream(1), strict=True))


def test_the_original_kaggle_split_is_rebuilt_with_its_copies(
    tmp_path: Path, fixtures_dir: Path, labelled: dict
) -> None:
    root = _write_manifest(tmp_path / "bone-fracture-xray", fixtures_dir, labelled)
    sha = sha256_file(fixtures_dir / "kaggle_fractured_1.jpg")
    with (root / "kaggle_split.csv").open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["kaggle_split", "kaggle_class", "kaggle_file", "sha256", "here"])
        w.writerow(["train", "fractured", "1.jpg", sha, "curated:train"])
        w.writerow(["test", "fractured", "1 - Copy.jpg", sha, "curated:train"])
        w.writerow(["train", "not fractured", "x.jpg", "f" * 64, "elsewhere"])
    records = load_kaggle_original_split(root)
    assert [(r.split, r.label, r.source) for r in records] == [
        ("train", 1, "kaggle_original"),
        ("test", 1, "kaggle_original"),
    ]
    assert records[0].path == records[1].path


def test_grouped_folds_always_train_on_big_clusters() -> None:
    from classifier.data import Record

    records = [Record(Path(f"b{i}.png"), "s", "train", 0, "big") for i in range(50)]
    records += [Record(Path(f"{i}.png"), "s", "train", i % 2, f"c{i}") for i in range(60)]
    folds = grouped_folds(records, 3, seed=0, max_held_cluster=40)
    assert set(folds[:50].tolist()) == {-1}
    assert set(folds[50:].tolist()) == {0, 1, 2}


def test_cluster_power_makes_each_radiograph_count_once() -> None:
    from classifier.data import ImageSet, Record

    records = [Record(Path(f"n{i}"), "s", "train", 0, "big") for i in range(30)]
    records += [Record(Path(f"m{i}"), "s", "train", 0, f"m{i}") for i in range(3)]
    records += [Record(Path(f"p{i}"), "s", "train", 1, f"p{i}") for i in range(10)]
    data = ImageSet(records, np.zeros((43, 8, 8), np.uint8), [None] * 43, InputSpec(size=8))  # type: ignore[list-item]
    w = sample_weights(data, cluster_power=1.0)
    assert w[:30].sum() == pytest.approx(w[30])  # the 30-copy cluster weighs one radiograph
    assert w[:33].sum() == pytest.approx(w[33:].sum())  # and the classes still balance


def test_global_class_balance_keeps_each_sources_prevalence() -> None:
    from classifier.data import ImageSet, Record

    records = [Record(Path(f"k{i}"), "k", "train", int(i < 50), f"k{i}") for i in range(100)]
    records += [Record(Path(f"f{i}"), "f", "train", int(i < 10), f"f{i}") for i in range(100)]
    data = ImageSet(records, np.zeros((200, 8, 8), np.uint8), [None] * 200, InputSpec(size=8))  # type: ignore[list-item]
    w = sample_weights(data, class_balance="global")
    labels, sources = data.labels, data.sources
    assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum())
    share = {s: w[(sources == s) & (labels == 1)].sum() / w[sources == s].sum() for s in ("k", "f")}
    assert share["k"] > 0.5 > share["f"]  # FracAtlas-like positives stay rarer than Kaggle-like ones
