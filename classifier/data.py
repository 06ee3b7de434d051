"""Data: load radiograph collections (manifests or ``split/label/image`` folders) and cache their images.

A *source* is one data set directory. With a ``manifest.csv`` (the curated sets in ``../shared/datasets``)
its split, label, cluster and, for FracAtlas, region, hardware and fracture boxes are read from it;
without one the directory must be laid out ``split/label/image`` (the layout of public fracture data sets
and of the founding notebooks) and every image is its own cluster. Several sources load at once, each
record tagged with its source, and cluster ids are made globally unique (``source:cluster``).

Images are decoded once through :mod:`classifier.preprocessing` (the serving code path) into a uint8
letterboxed array cache; the training pipeline (:mod:`classifier.pipeline`) augments that cache on the fly
with TensorFlow ops (flips, rotation, shift, zoom, brightness/contrast) on both CPU cores.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from classifier.decoding import UnreadableImageError, decode_grayscale
from classifier.preprocessing import InputSpec, Letterbox, letterbox_uint8

log = logging.getLogger(__name__)

# Where the command lines keep decoded-image caches (classifier_runs/ is not in git).
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "classifier_runs" / "cache"

# Bumped whenever decoding changes what an image file becomes (2: EXIF orientation applied).
DECODE_VERSION = 2

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".dcm", ".dicom"}
SPLITS = ("train", "val", "test")
_POSITIVE_NAMES = {"fractured", "fracture", "fractures", "positive", "abnormal", "1", "yes"}
_NEGATIVE_NAMES = {
    "not_fractured",
    "non_fractured",
    "nonfractured",
    "unfractured",
    "no_fracture",
    "normal",
    "negative",
    "0",
    "no",
}
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
_SPLIT_ALIASES.update({"test": "test", "testing": "test"})

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Record:
    """One image file. ``label`` is 1 for fractured; ``cluster`` is unique across sources."""

    path: Path
    source: str
    split: str
    label: int
    cluster: str
    sha256: str = ""
    region: str = ""
    hardware: int = 0
    boxes: tuple[Box, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.source}:{self.sha256 or self.path.name}"


def label_from_name(name: str) -> int:
    """A class folder's name -> 1 (fractured) / 0 (not fractured); raises on anything else."""
    norm = name.strip().lower().replace(" ", "_").replace("-", "_")
    if norm in _POSITIVE_NAMES:
        return 1
    if norm in _NEGATIVE_NAMES:
        return 0
    raise ValueError(f"cannot tell whether class folder {name!r} means fractured or not fractured")


def split_from_name(name: str) -> str | None:
    return _SPLIT_ALIASES.get(name.strip().lower())


def _parse_boxes(text: str) -> tuple[Box, ...]:
    boxes = []
    for part in (text or "").split(";"):
        values = part.split()
        if len(values) == 4:
            cx, cy, w, h = (float(v) for v in values)
            boxes.append((cx, cy, w, h))
    return tuple(boxes)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_name(data_dir: Path) -> str:
    """A short, stable name for a data directory ("kaggle" for the curated Kaggle copy)."""
    name = data_dir.resolve().name.lower()
    return {"bone-fracture-xray": "kaggle", "fracatlas": "fracatlas", "bone-fracture-boxes": "boxes"}.get(
        name, name
    )


def load_source(data_dir: Path, *, source: str | None = None, hash_files: bool = False) -> list[Record]:
    """Every image of one data directory, from its manifest when it has one, else its folder layout."""
    data_dir = Path(data_dir)
    source = source or source_name(data_dir)
    manifest = data_dir / "manifest.csv"
    if manifest.is_file():
        return _load_manifest(data_dir, manifest, source)
    return _load_folders(data_dir, source, hash_files=hash_files)


def _load_manifest(data_dir: Path, manifest: Path, source: str) -> list[Record]:
    records = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            split = split_from_name(row["split"]) or row["split"]
            records.append(
                Record(
                    path=data_dir / row["path"],
                    source=source,
                    split=split,
                    label=label_from_name(row["label"]),
                    cluster=f"{source}:{row.get('cluster') or row.get('sha256') or row['path']}",
                    sha256=row.get("sha256", ""),
                    region=row.get("region", "") or "",
                    hardware=int(row.get("hardware") or 0),
                    boxes=_parse_boxes(row.get("fracture_boxes", "")),
                )
            )
    return records


def _load_folders(data_dir: Path, source: str, *, hash_files: bool) -> list[Record]:
    records = []
    for split_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        split = split_from_name(split_dir.name)
        if split is None:
            log.warning("skipping %s: not a train/val/test folder", split_dir)
            continue
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = label_from_name(label_dir.name)
            for path in sorted(label_dir.rglob("*")):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                digest = sha256_file(path) if hash_files else ""
                records.append(
                    Record(
                        path=path,
                        source=source,
                        split=split,
                        label=label,
                        cluster=f"{source}:{digest or path.relative_to(data_dir)}",
                        sha256=digest,
                    )
                )
    if not records:
        raise ValueError(f"no images found under {data_dir} (expected split/label/image folders)")
    return records


def load_sources(data_dirs: Iterable[Path]) -> list[Record]:
    records: list[Record] = []
    seen: set[str] = set()
    for data_dir in data_dirs:
        source = source_name(Path(data_dir))
        if source in seen:
            raise ValueError(f"two data directories share the source name {source!r}")
        seen.add(source)
        records.extend(load_source(Path(data_dir), source=source))
    return records


def select(
    records: Sequence[Record], *, splits: Iterable[str] | None = None, sources: Iterable[str] | None = None
) -> list[Record]:
    split_set = set(splits) if splits is not None else None
    source_set = set(sources) if sources is not None else None
    return [
        r
        for r in records
        if (split_set is None or r.split in split_set) and (source_set is None or r.source in source_set)
    ]


def fingerprint(records: Sequence[Record]) -> str:
    """A SHA-256 over the sorted (source, split, label, content hash or file name) of the records."""
    digest = hashlib.sha256()
    for line in sorted(f"{r.source}\t{r.split}\t{r.label}\t{r.sha256 or r.path.name}" for r in records):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def describe(records: Sequence[Record]) -> dict[str, Any]:
    """Counts per source, split and label (images and clusters), for cards and reports."""
    out: dict[str, Any] = {}
    for r in records:
        entry = out.setdefault(r.source, {}).setdefault(
            r.split, {"images": [0, 0], "clusters": [set(), set()]}
        )
        entry["images"][r.label] += 1
        entry["clusters"][r.label].add(r.cluster)
    return {
        source: {
            split: {
                "fractured_images": e["images"][1],
                "not_fractured_images": e["images"][0],
                "fractured_clusters": len(e["clusters"][1]),
                "not_fractured_clusters": len(e["clusters"][0]),
            }
            for split, e in splits.items()
        }
        for source, splits in out.items()
    }


# ----------------------------------------------------------------------------------------------- cache


@dataclass
class ImageSet:
    """Records with their letterboxed uint8 images (N, S, S) and geometries, in record order."""

    records: list[Record]
    images: np.ndarray
    geometries: list[Letterbox]
    spec: InputSpec

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], np.int32)

    @property
    def clusters(self) -> np.ndarray:
        return np.array([r.cluster for r in self.records])

    @property
    def sources(self) -> np.ndarray:
        return np.array([r.source for r in self.records])

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            records=[self.records[i] for i in index],
            images=self.images[index],
            geometries=[self.geometries[i] for i in index],
            spec=self.spec,
        )

    def content_boxes(self) -> np.ndarray:
        """(N, 4) int32: top, left, height, width of each image's content in the square."""
        return np.array(
            [(g.top, g.left, g.content_height, g.content_width) for g in self.geometries], np.int32
        )


def _cache_key(records: Sequence[Record], spec: InputSpec) -> str:
    # DECODE_VERSION: a change in how files decode (EXIF orientation) must not reuse old caches.
    digest = hashlib.sha256(f"{DECODE_VERSION}{sorted(spec.to_dict().items())!r}".encode())
    for r in records:
        digest.update(f"{r.path}\t{r.sha256}\n".encode())
    return digest.hexdigest()[:20]


def _load_one(path: Path, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    return letterbox_uint8(decode_grayscale(path.read_bytes()), spec)


def load_images(
    records: Sequence[Record],
    spec: InputSpec,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
    skip_unreadable: bool = True,
) -> ImageSet:
    """Decode and letterbox every record (in parallel, cached on disk when ``cache_dir`` is given).

    Unreadable files are logged and dropped (or raise, with ``skip_unreadable=False``).
    """
    records = list(records)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{spec.size}-{_cache_key(records, spec)}.npz"
        if cache_file.exists():
            with np.load(cache_file, allow_pickle=False) as cached:
                keep = cached["keep"]
                geometries = [Letterbox(*map(int, row)) for row in cached["geometry"]]
                kept = [r for r, k in zip(records, keep, strict=True) if k]
                return ImageSet(kept, cached["images"], geometries, spec)

    workers = workers or min(4, os.cpu_count() or 1)
    images = np.zeros((len(records), spec.size, spec.size), np.uint8)
    geometry_rows = np.zeros((len(records), 7), np.int64)
    keep = np.ones(len(records), bool)

    def work(i: int) -> None:
        try:
            image, geometry = _load_one(records[i].path, spec)
        except (UnreadableImageError, OSError) as exc:
            if not skip_unreadable:
                raise
            log.warning("skipping unreadable %s: %s", records[i].path, exc)
            keep[i] = False
            return
        images[i] = image
        geometry_rows[i] = [
            geometry.original_height,
            geometry.original_width,
            geometry.size,
            geometry.top,
            geometry.left,
            geometry.content_height,
            geometry.content_width,
        ]

    # OpenCV and Pillow release the GIL while decoding and resizing: threads keep the cores busy.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(len(records))))
    images, geometry_rows = images[keep], geometry_rows[keep]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, geometry=geometry_rows, keep=keep)
        tmp.replace(cache_file)
    kept = [r for r, k in zip(records, keep, strict=True) if k]
    return ImageSet(kept, images, [Letterbox(*map(int, row)) for row in geometry_rows], spec)


def load_kaggle_original_split(data_dir: Path) -> list[Record]:
    """The original (leaky) Kaggle split rebuilt from ``kaggle_split.csv``: one record per Kaggle file.

    Files whose content is in the curated folder are mapped to it (byte copies stay separate records,
    as they were in the original split); contents kept aside or excluded are left out. Each distinct
    content is its own cluster, which is what a user of the original split would have assumed.
    """
    data_dir = Path(data_dir)
    by_sha = {r.sha256: r for r in load_source(data_dir, source="kaggle")}
    records = []
    with (data_dir / "kaggle_split.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["here"].startswith("curated:"):
                continue
            curated = by_sha[row["sha256"]]
            split = split_from_name(row["kaggle_split"]) or row["kaggle_split"]
            records.append(
                replace(
                    curated,
                    source="kaggle_original",
                    split=split,
                    label=label_from_name(row["kaggle_class"]),
                    cluster=f"kaggle_original:{row['sha256']}",
                )
            )
    return records
