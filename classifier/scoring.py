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


class Logits:
    """Records and their image logits, in record order: what calibration and the operating points are fitted
    on (``classifier.bands``), whether the logits come from a forward pass (``Scored``) or from the out-of-
    fold predictions of a cross-validation, read back from their CSV files."""

    def __init__(self, records: list[Record], logits: np.ndarray) -> None:
        self.records = records
        self.logits = np.asarray(logits, np.float32)
        self.labels = np.array([r.label for r in records])
        self.clusters = np.array([r.cluster for r in records])
        self.sources = np.array([r.source for r in records])

    def where(self, source: str) -> np.ndarray:
        return np.flatnonzero(self.sources == source)


class Scored(Logits):
    """One image set through ``predictor.forward``, in record order."""

    def __init__(self, predictor: Any, data: ImageSet, *, batch_size: int = 32) -> None:
        self.data = data
        logits = np.zeros(len(data.records), np.float32)
        cams: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        for start, batch in model_input_batches(data.images, batch_size):
            forward = predictor.forward(batch)
            logits[start : start + len(batch)] = forward.logits
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
        super().__init__(data.records, logits)


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


def read_predictions(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV that ``write_predictions`` wrote, as strings by column name."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
