"""Active against shadow on the reviewed cases: the admin comparison and the promotion gate's evidence.

A version's score for a radiograph is its Prediction (when it was active) or its ShadowPrediction (when
it was in shadow); the reference standard is the adjudicated label where there is one, else the
standing (latest) review's final call.

The paired bootstrap over tens of thousands of cases takes seconds, so the page never computes it: it
shows the comparison last stored (``comparison_stored``) with the time it was computed, and when the
evidence has changed since (or nothing is stored yet) asks the worker to recompute it
(``comparison_request_refresh``: the task ``refresh_comparisons``, on the shadow versions' low-priority
worker; Celery beat also runs it every GOVERNANCE_COMPARISON_REFRESH_SECONDS). The promotion gate always
computes afresh (``compare_versions``).
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

from radiology import dispatch
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
# Where the last computed comparison of a pair is kept (the cache: a table in the database, or Redis),
# without expiry; "v2" names the stored shape, so a release that changes it never reads an old one.
STORED_KEY = "governance:comparison:v2:"
# The page asks for a recomputation at most this often (the worker skips a pair whose evidence is unchanged).
REFRESH_REQUEST_SECONDS = 60


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


def compare_versions(*, active: str, shadow: str) -> Comparison:
    """The comparison on every reviewed case read by both versions, computed now (seconds at scale: the
    promotion gate and the worker's refresh call it, never a page)."""
    stamp = _evidence_stamp(active, shadow)  # before the reads: evidence added meanwhile makes it stale
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
        stamp=stamp,
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
    comparison.computed_at = timezone.now()
    return comparison


def _stored_key(active: str, shadow: str) -> str:
    return STORED_KEY + hashlib.sha256(f"{active}\n{shadow}".encode()).hexdigest()[:24]


def comparison_stored(*, active: str, shadow: str) -> Comparison | None:
    """The comparison last computed for this pair (None before the first): what the page shows."""
    stored = cache.get(_stored_key(active, shadow))
    return stored if isinstance(stored, Comparison) else None


@dataclass(frozen=True)
class PageComparison:
    comparison: Comparison | None  # the last one computed; None until the worker has computed one
    stale: bool  # new evidence since (or none yet): a recomputation has been asked for


def comparison_for_page(*, active: str, shadow: str) -> PageComparison:
    """The stored comparison and whether the evidence changed since it was computed: four index lookups
    and one cache read, whatever the number of cases."""
    stored = comparison_stored(active=active, shadow=shadow)
    stale = stored is None or stored.stamp != _evidence_stamp(active, shadow)
    return PageComparison(stored, stale)


def comparison_refresh(*, active: str, shadow: str) -> tuple[Comparison, bool]:
    """Compute and store the pair's comparison unless the stored one is of the current evidence; the
    comparison, and whether it was computed now (the worker's task calls this)."""
    stored = comparison_stored(active=active, shadow=shadow)
    if stored is not None and stored.stamp == _evidence_stamp(active, shadow):
        return stored, False
    comparison = compare_versions(active=active, shadow=shadow)
    cache.set(_stored_key(active, shadow), comparison, None)  # kept until replaced
    return comparison, True


def comparison_request_refresh() -> bool:
    """Ask the worker to recompute the stale comparisons, at most once per REFRESH_REQUEST_SECONDS however
    many pages are viewed; True if a request was sent now."""
    if not cache.add("governance:comparison:refresh-requested", 1, REFRESH_REQUEST_SECONDS):
        return False
    return dispatch.send_comparison_refresh()


def comparison_context(comparison: Comparison) -> dict[str, Any]:
    return {"comparison": comparison}
