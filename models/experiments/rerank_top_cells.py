"""A second look at the shipped model's first 10 fracture cells: can a re-ranker fitted on val point better?

    .venv/bin/python models/experiments/rerank_top_cells.py [--model models/lite0-det-v2.3]

Post hoc, no training of the network (rule and result in notes.md, "A re-ranker of the top fracture cells").
For each fractured radiograph with boxes (FracAtlas and the boxes source), the 10 highest cells inside the
image content are candidates; each is described by the 96 features of the cell head's 3 x 3 convolution
there (image and mirror averaged, as served) and ten plain figures; an L2 logistic regression tells the
candidates inside a true box from the others. Its feature set and strength are chosen by grouped
cross-validation over val clusters (nested: an inner 4-fold choice inside each outer fold), and the pointing
game is read out of fold, for three shuffles of the clusters into folds; then one fit chosen on all of val
is read on test. Prints the figures. About 8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.cells import _model_to_original, fraction_boxes_to_pixels, point_in_box
from classifier.data import load_images, load_sources, select
from classifier.predict import Predictor
from classifier.preprocessing import model_input_batches

DATASETS = Path("../shared/datasets")
SOURCES = ("fracatlas", "boxes")
CANDIDATES = 10
GRID = [(kind, c) for kind in ("plain", "with_features") for c in (0.001, 0.01, 0.1, 1.0)]


@dataclass
class Image:
    source: str
    group: str
    plain: np.ndarray  # (CANDIDATES, 10)
    features: np.ndarray  # (CANDIDATES, 96)
    hits: np.ndarray  # (CANDIDATES,) candidate centre inside a true box

    def x(self, kind: str) -> np.ndarray:
        return self.plain if kind == "plain" else np.concatenate([self.plain, self.features], axis=1)


def candidates(predictor: Predictor, split: str) -> list[Image]:
    """The first cells of each fractured radiograph with boxes of ``split``, and what the model saw there."""
    import keras

    records = load_sources(
        [DATASETS / "bone-fracture-xray", DATASETS / "fracatlas", DATASETS / "bone-fracture-boxes"]
    )
    chosen = [r for r in select(records, splits=[split]) if r.source in SOURCES and r.label == 1 and r.boxes]
    data = load_images(chosen, predictor.input_spec, cache_dir=None)
    core = next(layer for layer in predictor.model.layers if isinstance(layer, keras.Model))
    taps = keras.Model(
        core.input, [core.get_layer("cells_conv").output, core.get_layer("cells").output, core.outputs[0]]
    )
    images = []
    for start, x in model_input_batches(data.images, 16):
        views = [[np.asarray(t) for t in taps.predict_on_batch(v)] for v in (x, x[:, :, ::-1])]
        # The mirror's maps flipped back and averaged with the image's, as the served model does.
        feats, cells, cams = ((a + b[:, :, ::-1]) / 2 for a, b in zip(views[0], views[1], strict=True))
        for b in range(len(x)):
            record, g = data.records[start + b], data.geometries[start + b]
            cell = cells[b, :, :, 0]
            n = cell.shape[0]
            stride = g.size / n
            centres = (np.arange(n) + 0.5) * stride
            rows = (centres >= g.top) & (centres < g.top + g.content_height)
            cols = (centres >= g.left) & (centres < g.left + g.content_width)
            inside = np.full_like(cell, -np.inf)
            inside[np.ix_(rows, cols)] = cell[np.ix_(rows, cols)]
            truths = fraction_boxes_to_pixels(record.boxes, g.original_width, g.original_height)
            pixels = x[b, :, :, 0]
            plain, features, hits = [], [], []
            for rank, flat in enumerate(np.argsort(-inside.ravel())[:CANDIDATES]):
                row, col = divmod(int(flat), n)
                top, left = int(row * stride), int(col * stride)
                own = pixels[top : top + 16, left : left + 16]
                around = pixels[max(0, top - 16) : top + 32, max(0, left - 16) : left + 32]
                plain.append(
                    [
                        inside[row, col],
                        rank,
                        inside[row, col] - inside.max(),
                        cams[b].mean(),
                        (centres[row] - g.top) / g.content_height,
                        (centres[col] - g.left) / g.content_width,
                        own.mean(),
                        own.std(),
                        around.mean(),
                        around.std(),
                    ]
                )
                features.append(feats[b, row, col])
                px, py = _model_to_original(g, centres[col], centres[row])
                hits.append(any(point_in_box(px, py, t) for t in truths))
            images.append(
                Image(
                    record.source,
                    f"{record.source}:{record.cluster}",
                    np.array(plain),
                    np.array(features),
                    np.array(hits),
                )
            )
    return images


def fit(images: list[Image], kind: str, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([i.x(kind) for i in images])
    y = np.concatenate([i.hits for i in images])
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(x, y)


def pointing(images: list[Image], kind: str, model: Any) -> np.ndarray:
    """Whether each image's best candidate after re-ranking is inside a true box."""
    return np.array([i.hits[int(np.argmax(model.decision_function(i.x(kind))))] for i in images])


def mean_over_sources(images: list[Image], hits: np.ndarray) -> float:
    sources = np.array([i.source for i in images])
    return float(np.mean([hits[sources == s].mean() for s in SOURCES if (sources == s).any()]))


def choose(images: list[Image], folds: int) -> tuple[str, float]:
    """The feature set and strength with the best grouped cross-validated pointing game."""
    from sklearn.model_selection import GroupKFold

    groups = [i.group for i in images]
    scores = {}
    for kind, c in GRID:
        per_fold = []
        for train, held in GroupKFold(folds).split(images, groups=groups):
            model = fit([images[j] for j in train], kind, c)
            held_images = [images[j] for j in held]
            per_fold.append(mean_over_sources(held_images, pointing(held_images, kind, model)))
        scores[(kind, c)] = float(np.mean(per_fold))
    return max(scores, key=lambda k: scores[k])


def out_of_fold(images: list[Image], seed: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Nested grouped 5-fold cross-validation, the clusters shuffled into folds by ``seed``."""
    from sklearn.model_selection import GroupKFold

    names = sorted({i.group for i in images})
    order = {g: k for k, g in enumerate(np.random.default_rng(seed).permutation(names))}
    groups = [order[i.group] for i in images]
    hits = np.zeros(len(images), bool)
    chosen = []
    for train, held in GroupKFold(5).split(images, groups=groups):
        inner = [images[j] for j in train]
        kind, c = choose(inner, 4)
        chosen.append((kind, c))
        held_images = [images[j] for j in held]
        hits[held] = pointing(held_images, kind, fit(inner, kind, c))
    return hits, chosen


def report(label: str, images: list[Image], hits: np.ndarray) -> None:
    sources = np.array([i.source for i in images])
    first = np.array([i.hits[0] for i in images])
    for s in SOURCES:
        k = sources == s
        figures = f"first cell {first[k].mean():.3f}, re-ranked {hits[k].mean():.3f}"
        sys.stdout.write(f"{label} {s}: {k.sum()} images, {figures}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/lite0-det-v2.3"))
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.model)
    val = candidates(predictor, "val")
    for seed in (0, 1, 2):
        hits, chosen = out_of_fold(val, seed)
        sys.stdout.write(f"val, out of fold (shuffle {seed}; chosen per fold: {chosen})\n")
        report("  val", val, hits)
    kind, c = choose(val, 5)
    test = candidates(predictor, "test")
    sys.stdout.write(f"test, one fit on all of val ({kind}, C={c}), read after\n")
    report("  test", test, pointing(test, kind, fit(val, kind, c)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
