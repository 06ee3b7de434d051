"""Audit a data set before training on it: balance, sizes and modes, unreadable files, duplicates, leakage.

    python -m classifier.audit DATA_DIR [--out DIR] [--near-threshold 0.95]

DATA_DIR is laid out ``split/label/image`` (or holds a ``manifest.csv``). The audit writes ``audit.md``
and ``audit.json`` with plots (class balance, a sample grid per class, intensity histograms per class,
image sizes) and flags:

- unreadable files (truncated, corrupt, not an image);
- exact duplicates (same bytes) and near-duplicates (the same picture resized, recompressed, flipped or
  turned by a right angle: correlation of blurred 32 x 32 thumbnails under the 8 flips/rotations);
- **leakage**: val/test images with an exact or near copy in train, and contents that carry both labels.

The public Kaggle split is the cautionary example: 491 of its 506 test images are byte copies of
training images.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from classifier.data import Record, load_source, sha256_file
from classifier.decoding import UnreadableImageError, decode_grayscale, sniff_format
from classifier.figures import pyplot, save_figure

log = logging.getLogger("classifier.audit")

THUMB = 32
NEAR_THRESHOLD = 0.95


@dataclass
class Item:
    record: Record
    sha256: str
    format: str
    width: int
    height: int
    mode: str
    error: str | None
    thumb: np.ndarray | None
    histogram: np.ndarray | None


def _inspect(record: Record) -> Item:
    sha = record.sha256 or sha256_file(record.path)
    data = record.path.read_bytes()
    fmt = sniff_format(data) or "unknown"
    mode, width, height = "", 0, 0
    if fmt in ("PNG", "JPEG", "GIF"):
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                mode, (width, height) = image.mode, image.size
        except Exception:  # the decode below reports the reason
            mode = "?"
    try:
        gray = decode_grayscale(data, max_pixels=200_000_000)
    except UnreadableImageError as exc:
        return Item(record, sha, fmt, width, height, mode, str(exc), None, None)
    height, width = gray.shape
    return Item(record, sha, fmt, width, height, mode or "DICOM", None, thumbnail(gray), _histogram(gray))


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A zero-mean, unit-norm 32 x 32 thumbnail of the blurred, squashed image (aspect ignored)."""
    small = cv2.resize(gray, (THUMB * 2, THUMB * 2), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.5)
    thumb = cv2.resize(small, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean()
    norm = np.linalg.norm(thumb)
    return thumb / norm if norm > 0 else thumb


def _histogram(gray: np.ndarray) -> np.ndarray:
    hist = np.bincount(gray.reshape(-1), minlength=256).astype(np.float64)
    return hist / hist.sum()


def dihedral(thumb: np.ndarray) -> list[np.ndarray]:
    views = []
    for k in range(4):
        rotated = np.rot90(thumb, k)
        views += [rotated, rotated[:, ::-1]]
    return views


def near_duplicate_pairs(
    thumbs: np.ndarray, threshold: float = NEAR_THRESHOLD, *, chunk: int = 1024
) -> list[tuple[int, int, float]]:
    """Pairs (i < j) whose thumbnails correlate above ``threshold`` under any flip / right-angle turn."""
    n = len(thumbs)
    flat = thumbs.reshape(n, -1)
    variants = np.stack([np.stack(dihedral(t)) for t in thumbs]).reshape(n, 8, -1)  # (n, 8, d)
    pairs = []
    for start in range(0, n, chunk):
        q = variants[start : start + chunk]  # (c, 8, d)
        sims = np.einsum("cvd,nd->cvn", q, flat).max(axis=1)  # best view, (c, n)
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols, strict=True):
            i = start + int(r)
            if i < c:
                pairs.append((i, int(c), float(sims[r, c])))
    return pairs


def audit(
    data_dir: Path, *, near_threshold: float = NEAR_THRESHOLD, workers: int = 4
) -> tuple[dict[str, Any], list[Item]]:
    records = load_source(data_dir, hash_files=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        items = list(pool.map(_inspect, records))

    summary: dict[str, Any] = {"data_dir": str(data_dir), "files": len(items)}
    balance: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"fractured": 0, "not_fractured": 0})
    for it in items:
        balance[it.record.split]["fractured" if it.record.label else "not_fractured"] += 1
    summary["class_balance"] = {split: dict(v) for split, v in sorted(balance.items())}
    summary["formats"] = dict(collections.Counter(f"{it.format}/{it.mode}" for it in items).most_common())
    sizes = np.array([(it.width, it.height) for it in items if it.error is None])
    if len(sizes):
        summary["sizes"] = {
            "min": sizes.min(axis=0).tolist(),
            "median": np.median(sizes, axis=0).tolist(),
            "max": sizes.max(axis=0).tolist(),
            "most_common": [
                [f"{w}x{h}", n]
                for (w, h), n in collections.Counter(map(tuple, sizes.tolist())).most_common(5)
            ],
        }
    summary["unreadable"] = [{"path": str(it.record.path), "reason": it.error} for it in items if it.error]

    # Exact duplicates: byte-identical files.
    by_sha: dict[str, list[int]] = collections.defaultdict(list)
    for i, it in enumerate(items):
        by_sha[it.sha256].append(i)
    groups = [g for g in by_sha.values() if len(g) > 1]
    summary["exact"] = {
        "distinct_contents": len(by_sha),
        "duplicate_groups": len(groups),
        "redundant_files": sum(len(g) - 1 for g in groups),
    }
    conflicts = [g for g in groups if len({items[i].record.label for i in g}) > 1]
    summary["exact"]["label_conflicts"] = len(conflicts)

    # Near duplicates on the distinct readable contents.
    firsts = [g[0] for g in by_sha.values() if items[g[0]].thumb is not None]
    thumb_list = [t for t in (items[i].thumb for i in firsts) if t is not None]
    thumbs = np.stack(thumb_list) if thumb_list else np.zeros((0, THUMB, THUMB), np.float32)
    near = [(firsts[a], firsts[b], s) for a, b, s in near_duplicate_pairs(thumbs, near_threshold)]
    summary["near"] = {"threshold": near_threshold, "pairs": len(near)}

    # Leakage: evaluation images with a copy (exact or near) in train.
    splits_of_sha = {sha: {items[i].record.split for i in g} for sha, g in by_sha.items()}
    near_partners: dict[int, set[int]] = collections.defaultdict(set)
    for a, b, _ in near:
        near_partners[a].add(b)
        near_partners[b].add(a)
    leak: dict[str, Any] = {}
    for split in ("val", "test"):
        members = [i for i, it in enumerate(items) if it.record.split == split]
        exact = [i for i in members if "train" in splits_of_sha[items[i].sha256]]
        near_only = []
        for i in members:
            if i in exact:
                continue
            head = by_sha[items[i].sha256][0]
            partners = near_partners.get(head, set())
            if any("train" in splits_of_sha[items[j].sha256] for j in partners):
                near_only.append(i)
        leak[split] = {
            "images": len(members),
            "exact_copy_in_train": len(exact),
            "near_copy_in_train": len(near_only),
            "examples": [str(items[i].record.path) for i in (exact + near_only)[:10]],
        }
    summary["leakage"] = leak
    label_clash_near = sum(1 for a, b, _ in near if items[a].record.label != items[b].record.label)
    summary["near"]["label_conflicts"] = label_clash_near
    summary["near"]["examples"] = [
        {"a": str(items[a].record.path), "b": str(items[b].record.path), "correlation": round(s, 4)}
        for a, b, s in sorted(near, key=lambda t: -t[2])[:10]
    ]
    summary["flags"] = _flags(summary)
    return summary, items


def _flags(summary: dict[str, Any]) -> list[str]:
    flags = []
    for split, leak in summary["leakage"].items():
        if leak["exact_copy_in_train"]:
            flags.append(
                f"LEAKAGE: {leak['exact_copy_in_train']} of {leak['images']} {split} images are byte copies "
                "of training images"
            )
        if leak["near_copy_in_train"]:
            flags.append(
                f"LEAKAGE: {leak['near_copy_in_train']} further {split} images are near copies of "
                "training images"
            )
    if summary["exact"]["label_conflicts"]:
        flags.append(f"LABELS: {summary['exact']['label_conflicts']} identical contents carry both labels")
    if summary["near"]["label_conflicts"]:
        flags.append(
            f"LABELS: {summary['near']['label_conflicts']} near-identical pairs carry different labels"
        )
    if summary["exact"]["redundant_files"]:
        flags.append(
            f"DUPLICATES: {summary['exact']['redundant_files']} files repeat content already present "
            f"({summary['exact']['distinct_contents']} distinct contents in {summary['files']} files)"
        )
    if summary["unreadable"]:
        flags.append(f"UNREADABLE: {len(summary['unreadable'])} files cannot be decoded")
    for split, counts in summary["class_balance"].items():
        total = counts["fractured"] + counts["not_fractured"]
        if total and min(counts.values()) / total < 0.25:
            flags.append(
                f"BALANCE: {split} is {counts['fractured']} fractured : {counts['not_fractured']} not"
            )
    return flags


# ---------------------------------------------------------------------------------------------- plots


def write_plots(items: Sequence[Item], out: Path, summary: dict[str, Any]) -> dict[str, str]:
    plt = pyplot()
    plots = {}
    # Class balance per split.
    splits = list(summary["class_balance"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(splits))
    frac = [summary["class_balance"][s]["fractured"] for s in splits]
    nfrac = [summary["class_balance"][s]["not_fractured"] for s in splits]
    ax.bar(x - 0.2, frac, 0.4, label="fractured")
    ax.bar(x + 0.2, nfrac, 0.4, label="not fractured")
    ax.set_xticks(x, splits)
    ax.set(ylabel="images", title="class balance")
    ax.legend()
    save_figure(fig, out / "class_balance.png", dpi=100)
    plots["class_balance"] = "class_balance.png"

    # Sample grid per class.
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(2, 8, figsize=(14, 4))
    for row, label in enumerate((1, 0)):
        members = [it for it in items if it.record.label == label and it.error is None]
        picks: list[int] = (
            rng.choice(len(members), size=min(8, len(members)), replace=False).tolist() if members else []
        )
        for col in range(8):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(picks):
                it = members[int(picks[col])]
                ax.imshow(decode_grayscale(it.record.path.read_bytes()), cmap="gray")
                ax.set_title(it.record.path.name[:14], fontsize=6)
        axes[row, 0].set_title(
            ("fractured" if label else "not fractured") + "\n" + axes[row, 0].get_title(), fontsize=7
        )
    save_figure(fig, out / "samples.png", dpi=90)
    plots["samples"] = "samples.png"

    # Mean intensity histogram per class.
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, name in ((1, "fractured"), (0, "not fractured")):
        hists = [it.histogram for it in items if it.record.label == label and it.histogram is not None]
        if hists:
            ax.plot(np.mean(hists, axis=0), label=name)
    ax.set(xlabel="grey level", ylabel="share of pixels", title="intensity histogram per class", yscale="log")
    ax.legend()
    save_figure(fig, out / "intensity.png", dpi=100)
    plots["intensity"] = "intensity.png"

    # Sizes.
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, name in ((1, "fractured"), (0, "not fractured")):
        wh = np.array(
            [(it.width, it.height) for it in items if it.record.label == label and it.error is None]
        )
        if len(wh):
            ax.scatter(wh[:, 0], wh[:, 1], s=5, alpha=0.4, label=name)
    ax.set(xlabel="width (px)", ylabel="height (px)", title="image sizes", xscale="log", yscale="log")
    ax.legend()
    save_figure(fig, out / "sizes.png", dpi=100)
    plots["sizes"] = "sizes.png"
    return plots


def write_report(summary: dict[str, Any], plots: dict[str, str], out: Path) -> Path:
    lines = [f"# Data audit: `{summary['data_dir']}`", ""]
    lines += ["## Flags", ""]
    lines += [f"- **{f}**" for f in summary["flags"]] or ["- none"]
    lines += ["", "## Class balance", "", "| split | fractured | not fractured |", "|---|---|---|"]
    for split, c in summary["class_balance"].items():
        lines.append(f"| {split} | {c['fractured']} | {c['not_fractured']} |")
    lines += ["", f"![class balance]({plots['class_balance']})", ""]
    lines += ["## Duplicates and leakage", ""]
    ex = summary["exact"]
    lines.append(
        f"{summary['files']} files, {ex['distinct_contents']} distinct contents; "
        f"{ex['duplicate_groups']} groups of byte copies ({ex['redundant_files']} redundant files, "
        f"{ex['label_conflicts']} with both labels)."
    )
    lines.append(
        f"Near-duplicate pairs (thumbnail correlation >= {summary['near']['threshold']} under flips and "
        f"right-angle turns): {summary['near']['pairs']} "
        f"({summary['near']['label_conflicts']} with different labels)."
    )
    lines += ["", "| split | images | byte copy in train | near copy in train |", "|---|---|---|---|"]
    for split, leak in summary["leakage"].items():
        lines.append(
            f"| {split} | {leak['images']} | {leak['exact_copy_in_train']} | {leak['near_copy_in_train']} |"
        )
    lines += ["", "## Formats, modes and sizes", ""]
    lines += [f"- {k}: {v}" for k, v in summary["formats"].items()]
    if "sizes" in summary:
        s = summary["sizes"]
        lines.append(f"- width x height: min {s['min']}, median {s['median']}, max {s['max']}")
        lines.append(f"- most common: {', '.join(f'{k} ({n})' for k, n in s['most_common'])}")
    lines += ["", f"![sizes]({plots['sizes']})", "", "## Unreadable files", ""]
    lines += [f"- `{u['path']}`: {u['reason']}" for u in summary["unreadable"]] or ["- none"]
    lines += [
        "",
        "## Samples and intensities",
        "",
        f"![samples]({plots['samples']})",
        "",
        f"![intensity histograms]({plots['intensity']})",
        "",
    ]
    path = out / "audit.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ./audit-<name>)")
    p.add_argument("--near-threshold", type=float, default=NEAR_THRESHOLD)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out or Path(f"audit-{args.data_dir.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)
    summary, items = audit(args.data_dir, near_threshold=args.near_threshold)
    plots = {} if args.no_plots else write_plots(items, out, summary)
    (out / "audit.json").write_text(json.dumps(summary, indent=2))
    if plots:
        write_report(summary, plots, out)
    for flag in summary["flags"]:
        log.warning("%s", flag)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
