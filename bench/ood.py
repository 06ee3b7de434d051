"""How well does an out-of-distribution distance separate non-radiographs from radiographs?

Embeds (Predictor.embed) training and val radiographs of the curated sources and the non-radiograph
fixtures (tests/fixtures/ood: a photo, a chest CT slice, a document scan), fits each candidate distance
on the training embeddings, sets its threshold at the 99th percentile of the val distances (<= 1 % of
in-distribution images flagged), and prints, per distance, the val flag rate and whether each
non-radiograph and each radiograph fixture is flagged. Prints figures; asserts nothing.

    python bench/ood.py [--model models/lite0-det-v2] [--train 800]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from classifier.data import load_source
    from classifier.decoding import decode_grayscale
    from classifier.predict import Predictor, default_model_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--train", type=int, default=800, help="training images to fit on (sampled)")
    parser.add_argument("--val", type=int, default=0, help="val images to set the threshold on (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="save the embeddings here (.npz)")
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    datasets = ROOT.parent / "shared" / "datasets"
    records = [r for name in ("bone-fracture-xray", "fracatlas") for r in load_source(datasets / name)]
    rng = np.random.default_rng(0)
    train = [r for r in records if r.split == "train"]
    train = [train[i] for i in rng.choice(len(train), min(args.train, len(train)), replace=False)]
    val = [r for r in records if r.split == "val"]
    if args.val:
        val = [val[i] for i in rng.choice(len(val), min(args.val, len(val)), replace=False)]

    def embed(paths: list[Path]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), 16):
            images = [decode_grayscale(p.read_bytes()) for p in paths[start : start + 16]]
            out.append(predictor.embed(images))
        return np.concatenate(out).astype(np.float64)

    fixtures = sorted((ROOT / "tests/fixtures/ood").glob("*.*"))
    radiographs = [
        p
        for p in sorted((ROOT / "tests/fixtures/images").iterdir())
        if p.suffix in (".jpg", ".png") and "truncated" not in p.name
    ]
    e_train, e_val = embed([r.path for r in train]), embed([r.path for r in val])
    e_ood, e_rad = embed(fixtures), embed(radiographs)
    if args.out:
        np.savez_compressed(args.out, train=e_train, val=e_val, ood=e_ood, rad=e_rad)
    print(
        f"{len(train)} train, {len(val)} val radiographs; {len(fixtures)} non-radiographs; "
        f"{len(radiographs)} radiograph fixtures"
    )

    mean, std = e_train.mean(0), e_train.std(0) + 1e-3
    centred = e_train - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variance = s**2 / (len(e_train) - 1)

    def diag(e: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(((e - mean) / std) ** 2, axis=1))

    def pca_mahalanobis(k: int):
        def f(e: np.ndarray) -> np.ndarray:
            z = (e - mean) @ vt[:k].T
            return np.sqrt(np.sum(z**2 / variance[:k], axis=1))

        return f

    def pca_residual(k: int):
        def f(e: np.ndarray) -> np.ndarray:
            c = e - mean
            return np.linalg.norm(c - (c @ vt[:k].T) @ vt[:k], axis=1) / np.linalg.norm(c, axis=1).clip(1e-9)

        return f

    def cosine(e: np.ndarray) -> np.ndarray:
        return 1 - (e @ mean) / (np.linalg.norm(e, axis=1) * np.linalg.norm(mean))

    candidates = {"diag RMS (card)": diag, "cosine to centre": cosine}
    for k in (8, 16, 32, 64):
        candidates[f"PCA Mahalanobis k={k}"] = pca_mahalanobis(k)
        candidates[f"PCA residual k={k}"] = pca_residual(k)
    print(
        "\n| distance | val flagged | "
        + " | ".join(p.stem for p in fixtures)
        + " | radiograph fixtures flagged |"
    )
    print("|---|---|" + "---|" * len(fixtures) + "---|")
    for name, f in candidates.items():
        threshold = float(np.quantile(f(e_val), 0.99))
        flags = f(e_ood) > threshold
        rad = f(e_rad) > threshold
        cells = " | ".join(
            f"{'FLAGGED' if x else 'missed'} ({d / threshold:.2f}x)"
            for x, d in zip(flags, f(e_ood), strict=True)
        )
        print(f"| {name} | {np.mean(f(e_val) > threshold):.1%} | {cells} | {int(rad.sum())} of {len(rad)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
