"""One image set through a predictor, and the one prediction-CSV writer.

``Scored`` is what the evaluation (``classifier.evaluate``) and the release (``classifier.release``) both
score: raw logits, and where the model has them CAMs, fracture-cell probabilities and embeddings, in record
order. ``write_predictions`` writes every ``predictions*.csv`` (training's val / out-of-fold logits, the
evaluation's and the release's calibrated predictions) in one layout: the record's columns, then the
caller's.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import ImageSet, Record
from classifier.preprocessing import model_input_batches

RECORD_COLUMNS = ("path", "source", "split", "cluster", "label", "hardware")


class Scored:
    """One image set through ``predictor.forward``, in record order."""

    def __init__(self, predictor: Any, data: ImageSet, *, batch_size: int = 32) -> None:
        self.data = data
        self.records: list[Record] = data.records
        self.logits = np.zeros(len(data.records), np.float32)
        cams: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        for start, batch in model_input_batches(data.images, batch_size):
            forward = predictor.forward(batch)
            self.logits[start : start + len(batch)] = forward.logits
            for kept, part in (
                (cams, forward.cams),
                (cells, forward.cells),
                (embeddings, forward.embeddings),
            ):
                if part is not None:
                    kept.extend(part)
        self.cams: list[np.ndarray] | None = cams or None
        self.cells = np.array(cells, np.float32)
        self.embeddings = np.array(embeddings, np.float32)
        self.labels = np.array([r.label for r in self.records])
        self.clusters = np.array([r.cluster for r in self.records])
        self.sources = np.array([r.source for r in self.records])

    def where(self, source: str) -> np.ndarray:
        return np.flatnonzero(self.sources == source)


def write_predictions(
    path: Path, records: Sequence[Record], columns: Mapping[str, Sequence[Any] | np.ndarray]
) -> None:
    """One row per record: its own columns, then ``columns`` (numbers to 6 decimals, words as they are)."""
    names = list(columns)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*RECORD_COLUMNS, *names])
        for i, r in enumerate(records):
            values = [columns[name][i] for name in names]
            writer.writerow(
                [str(r.path), r.source, r.split, r.cluster, r.label, r.hardware]
                + [v if isinstance(v, str) else f"{float(v):.6f}" for v in values]
            )
