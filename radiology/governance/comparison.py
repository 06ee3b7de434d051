"""Active against shadow on the reviewed cases: the admin comparison and the promotion gate's evidence.

A version's score for a radiograph is its Prediction (when it was active) or its ShadowPrediction (when
it was in shadow); the reference standard is the adjudicated label where there is one, else the
standing (latest) review's final call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Max
from django.utils import timezone

from radiology.governance.models import ShadowPrediction
from radiology.governance.stats import (
    PairedAuc,
    ReliabilityBin,
    expected_calibration_error,
    paired_auc_difference,
    reliability,
    wilson,
)
from radiology.models import Adjudication, Label, Prediction, Review

BOOTSTRAP_REPLICATES = 1000
DISAGREEMENTS_SHOWN = 50
CACHE_SECONDS = 600


@dataclass(frozen=True)
class Score:
    probability: float
    label: str
    band: str
    threshold: float
    threshold_sensitive: float | None
    threshold_specific: float | None


def version_scores(version: str, radiograph_ids: set[int] | None = None) -> dict[int, Score]:
    """Every score ``version`` gave, visible (Prediction) or shadow, by radiograph."""
    fields = (
        "radiograph_id",
        "probability",
        "label",
        "band",
        "threshold",
        "threshold_sensitive",
        "threshold_specific",
    )
    scores: dict[int, Score] = {}
    for model in (ShadowPrediction, Prediction):
        rows = model.objects.filter(model_version=version)
        if radiograph_ids is not None:
            rows = rows.filter(radiograph_id__in=radiograph_ids)
        for pk, *values in rows.values_list(*fields).iterator(chunk_size=5000):
            scores[pk] = Score(*values)
    return scores


def reference_labels() -> dict[int, tuple[int, int, bool]]:
    """radiograph id -> (1 if fractured, study id, adjudicated?) for every reviewed radiograph."""
    labels: dict[int, tuple[int, int, bool]] = {}
    # Latest review per radiograph: ordered oldest first, so later rows overwrite earlier ones.
    for radiograph_id, study_id, final in (
        Review.objects.order_by("created_at", "id")
        .values_list("radiograph_id", "radiograph__study_id", "final_label")
        .iterator(chunk_size=5000)
    ):
        labels[radiograph_id] = (int(final == Label.FRACTURED), study_id, False)
    for radiograph_id, label in (
        Adjudication.objects.filter(state=Adjudication.State.DECIDED)
        .order_by("decided_at", "id")
        .values_list("radiograph_id", "label")
    ):
        if radiograph_id in labels:
            labels[radiograph_id] = (int(label == Label.FRACTURED), labels[radiograph_id][1], True)
    return labels


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float | None
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    specificity: float | None
    specificity_ci: tuple[float, float] | None
    tp: int
    fn: int
    tn: int
    fp: int


@dataclass
class VersionSummary:
    version: str
    auc: float
    operating_points: list[OperatingPoint]
    calibration: list[ReliabilityBin]
    ece: float | None


@dataclass(frozen=True)
class Disagreement:
    radiograph_id: int
    study_id: int
    reference: str
    active_probability: float
    active_band: str
    shadow_probability: float
    shadow_band: str


@dataclass
class Comparison:
    active: str
    shadow: str
    cases: int
    positives: int
    adjudicated: int
    paired_auc: PairedAuc | None
    summaries: list[VersionSummary] = field(default_factory=list)
    band_agreement: float | None = None
    band_agreement_ci: tuple[float, float] | None = None
    band_table: dict[str, dict[str, int]] = field(default_factory=dict)
    label_disagreements: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    computed_at: dt.datetime = field(default_factory=timezone.now)
    stamp: str = ""


def _points(y: np.ndarray, scores: list[Score]) -> list[OperatingPoint]:
    p = np.array([s.probability for s in scores])
    out: list[OperatingPoint] = []
    seen: dict[bytes, int] = {}  # thresholds already shown -> their row
    for name, getter in (
        ("operating threshold", lambda s: s.threshold),
        ("sensitive point", lambda s: s.threshold_sensitive),
        ("specific point", lambda s: s.threshold_specific),
    ):
        thresholds = [getter(s) for s in scores]
        if not scores or any(t is None for t in thresholds):
            continue
        t = np.array(thresholds, dtype=np.float64)
        if t.tobytes() in seen:  # the same thresholds under another name: one row, both names
            row = seen[t.tobytes()]
            out[row] = replace(out[row], name=f"{out[row].name} = {name}")
            continue
        seen[t.tobytes()] = len(out)
        called = p >= t
        tp, fn = int(np.sum(called & (y == 1))), int(np.sum(~called & (y == 1)))
        tn, fp = int(np.sum(~called & (y == 0))), int(np.sum(called & (y == 0)))
        # One number when the version used one threshold throughout (the usual case).
        shown = float(t[0]) if np.all(t == t[0]) else None
        out.append(
            OperatingPoint(
                name,
                shown,
                tp / (tp + fn) if tp + fn else None,
                wilson(tp, tp + fn),
                tn / (tn + fp) if tn + fp else None,
                wilson(tn, tn + fp),
                tp,
                fn,
                tn,
                fp,
            )
        )
    return out


def _evidence_stamp(active: str, shadow: str) -> str:
    """The data watermark: changes whenever a review, an adjudication or a score is added.

    The newest row of each table by primary key (an index lookup each, whatever the table's size), so any
    version's new score changes it, not only these two versions': a superset of the changes that matter,
    bought with four lookups instead of scans of both versions' scores on every page view."""
    stamp = [
        active,
        shadow,
        Review.objects.aggregate(m=Max("id"))["m"],
        Adjudication.objects.aggregate(m=Max("decided_at"))["m"],
        ShadowPrediction.objects.aggregate(m=Max("id"))["m"],
        Prediction.objects.aggregate(m=Max("id"))["m"],
    ]
    return hashlib.sha256(repr(stamp).encode()).hexdigest()[:24]


def compare_versions(*, active: str, shadow: str, use_cache: bool = True) -> Comparison:
    """The comparison on every reviewed case read by both versions.

    With ``use_cache`` (the page) a result is reused while the evidence is unchanged, and for up to
    CACHE_SECONDS after it changed: the bootstrap over tens of thousands of cases takes seconds, and a
    busy department adds reviews every minute. The promotion gate always computes afresh."""
    key = "governance:comparison:" + hashlib.sha256(f"{active}\n{shadow}".encode()).hexdigest()[:24]
    if use_cache:
        stamp = _evidence_stamp(active, shadow)
        cached = cache.get(key)
        if cached is not None and (
            cached.stamp == stamp or (timezone.now() - cached.computed_at).total_seconds() < CACHE_SECONDS
        ):
            return cached
    reference = reference_labels()
    ids = set(reference)
    a_scores, s_scores = version_scores(active, ids), version_scores(shadow, ids)
    both = sorted(ids & set(a_scores) & set(s_scores))
    y = np.array([reference[pk][0] for pk in both], dtype=np.int64)
    studies = [reference[pk][1] for pk in both]
    a = [a_scores[pk] for pk in both]
    s = [s_scores[pk] for pk in both]
    comparison = Comparison(
        active=active,
        shadow=shadow,
        cases=len(both),
        positives=int(y.sum()),
        adjudicated=sum(1 for pk in both if reference[pk][2]),
        paired_auc=None,
    )
    if both:
        comparison.paired_auc = paired_auc_difference(
            y,
            [x.probability for x in a],
            [x.probability for x in s],
            studies,
            replicates=BOOTSTRAP_REPLICATES,
        )
        for version, scores, auc in (
            (active, a, comparison.paired_auc.auc_a),
            (shadow, s, comparison.paired_auc.auc_b),
        ):
            bins = reliability(y, [x.probability for x in scores])
            comparison.summaries.append(
                VersionSummary(version, auc, _points(y, scores), bins, expected_calibration_error(bins))
            )
        bands = ("fracture", "doubt", "no_fracture", "")
        table = {r: dict.fromkeys(bands, 0) for r in bands}
        for x, z in zip(a, s, strict=True):
            table[x.band if x.band in bands else ""][z.band if z.band in bands else ""] += 1
        comparison.band_table = table
        same = sum(table[b][b] for b in bands)
        comparison.band_agreement = same / len(both)
        comparison.band_agreement_ci = wilson(same, len(both))
        disagreements = [
            Disagreement(
                pk,
                reference[pk][1],
                Label.FRACTURED if reference[pk][0] else Label.NOT_FRACTURED,
                x.probability,
                x.band,
                z.probability,
                z.band,
            )
            for pk, x, z in zip(both, a, s, strict=True)
            if x.label != z.label
        ]
        comparison.label_disagreements = len(disagreements)
        # Largest score gap first: the cases most worth a second look.
        disagreements.sort(key=lambda d: -abs(d.shadow_probability - d.active_probability))
        comparison.disagreements = disagreements[:DISAGREEMENTS_SHOWN]
    if use_cache:
        comparison.stamp = stamp
        cache.set(key, comparison, 24 * 3600)
    return comparison


def comparison_context(comparison: Comparison) -> dict[str, Any]:
    return {"comparison": comparison}
