"""Drift without labels: per site/device, what the model is given and what it says, against the
reference distributions its card stores from validation.

Checked daily by Celery beat (worker.governance_tasks.check_drift) over the last
GOVERNANCE_DRIFT_WINDOW_DAYS: the population stability index of the score distribution
(card["reference"]["score"]), of the intensity histogram (card["reference"]["intensity"]) and of the
image size (card["reference"]["long_side"]), and the share of radiographs not analysed or failed. A
crossing raises a DriftAlert on the dashboard and an e-mail to every admin.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models.fields.json import KT
from django.utils import timezone

from radiology.governance.models import DriftAlert, GuardrailRefusal, ModelVersion, RadiographInputStats
from radiology.governance.stats import histogram_counts, population_stability_index
from radiology.models import AuditEvent, Prediction, Radiograph
from radiology.roles import ADMIN_GROUP
from radiology.services.audit import audit_record

logger = logging.getLogger(__name__)


def site_name(manufacturer: str | None, model: str | None, station: str | None) -> str:
    parts = [p for p in (manufacturer, model, station) if p]
    return " / ".join(parts) if parts else "unknown device (no DICOM header)"


@dataclass(frozen=True)
class Finding:
    site: str
    statistic: str
    value: float
    threshold: float
    sample_size: int
    details: dict[str, Any]


def _reference(card: Mapping[str, Any], name: str) -> tuple[list[float], list[float]] | None:
    ref = (card.get("reference") or {}).get(name) if isinstance(card.get("reference"), Mapping) else None
    if not isinstance(ref, Mapping) or "edges" not in ref or "fractions" not in ref:
        return None
    edges, fractions = list(map(float, ref["edges"])), list(map(float, ref["fractions"]))
    if len(edges) != len(fractions) + 1:
        return None
    return edges, fractions


def drift_findings(*, version: ModelVersion, start: dt.datetime, end: dt.datetime) -> list[Finding]:
    """Every statistic over its threshold, per site, for radiographs received in [start, end)."""
    card = version.card or {}
    psi_max = settings.GOVERNANCE_DRIFT_PSI_THRESHOLD
    share_max = settings.GOVERNANCE_DRIFT_NOT_ANALYSED_MAX
    minimum = settings.GOVERNANCE_DRIFT_MIN_SAMPLE
    radiographs = Radiograph.objects.filter(created_at__gte=start, created_at__lt=end).annotate(
        manufacturer=KT("dicom_attributes__Manufacturer"),
        device_model=KT("dicom_attributes__ManufacturerModelName"),
        station=KT("dicom_attributes__StationName"),
    )
    site_of: dict[int, str] = {}
    status_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pk, status, manufacturer, model, station in radiographs.values_list(
        "pk", "status", "manufacturer", "device_model", "station"
    ).iterator(chunk_size=5000):
        site = site_name(manufacturer, model, station)
        site_of[pk] = site
        status_counts[site][status] += 1
        status_counts[site]["total"] += 1
    refused: dict[str, int] = defaultdict(int)
    for radiograph_id in GuardrailRefusal.objects.filter(
        model_version=version.version, radiograph_id__in=list(site_of)
    ).values_list("radiograph_id", flat=True):
        refused[site_of[radiograph_id]] += 1

    scores: dict[str, list[float]] = defaultdict(list)
    for radiograph_id, probability in (
        Prediction.objects.filter(model_version=version.version, radiograph_id__in=list(site_of))
        .values_list("radiograph_id", "probability")
        .iterator(chunk_size=5000)
    ):
        scores[site_of[radiograph_id]].append(probability)
    intensity: dict[str, list[list[float]]] = defaultdict(list)
    sizes: dict[str, list[int]] = defaultdict(list)
    for radiograph_id, long_side, histogram in (
        RadiographInputStats.objects.filter(radiograph_id__in=list(site_of))
        .values_list("radiograph_id", "long_side", "intensity_histogram")
        .iterator(chunk_size=5000)
    ):
        intensity[site_of[radiograph_id]].append(histogram)
        sizes[site_of[radiograph_id]].append(long_side)

    findings: list[Finding] = []
    score_ref, intensity_ref, size_ref = (_reference(card, n) for n in ("score", "intensity", "long_side"))
    for site, counts in sorted(status_counts.items()):
        total = counts["total"]
        if total < minimum:
            continue
        for statistic, k in (
            ("share_not_analysed", refused[site]),
            ("share_failed", counts.get(Radiograph.Status.FAILED, 0)),
        ):
            share = k / total
            if share > share_max:
                findings.append(Finding(site, statistic, share, share_max, total, {"count": k}))
        if score_ref and len(scores[site]) >= minimum:
            psi = population_stability_index(score_ref[1], histogram_counts(scores[site], score_ref[0]))
            if psi > psi_max:
                findings.append(Finding(site, "psi_score", psi, psi_max, len(scores[site]), {}))
        if intensity_ref and len(intensity[site]) >= minimum:
            pooled = np.mean(np.asarray(intensity[site], dtype=np.float64), axis=0)
            if len(pooled) == len(intensity_ref[1]):
                psi = population_stability_index(intensity_ref[1], pooled * len(intensity[site]))
                if psi > psi_max:
                    findings.append(Finding(site, "psi_intensity", psi, psi_max, len(intensity[site]), {}))
        if size_ref and len(sizes[site]) >= minimum:
            psi = population_stability_index(size_ref[1], histogram_counts(sizes[site], size_ref[0]))
            if psi > psi_max:
                findings.append(Finding(site, "psi_long_side", psi, psi_max, len(sizes[site]), {}))
    return findings


def drift_check(*, now: dt.datetime) -> list[DriftAlert]:
    """The daily check for the active version; alerts stored, audited and e-mailed to the admins."""
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        return []
    start = now - dt.timedelta(days=settings.GOVERNANCE_DRIFT_WINDOW_DAYS)
    findings = drift_findings(version=version, start=start, end=now)
    alerts: list[DriftAlert] = []
    with transaction.atomic():
        for f in findings:
            # One alert per version, site and statistic a day, however often the check runs. The day is the
            # check's own (window_end = now), not the row's creation time: a check for 23:59 that is written
            # after midnight still counts for the day it checked.
            if DriftAlert.objects.filter(
                model_version=version.version,
                site=f.site,
                statistic=f.statistic,
                window_end__date=timezone.localdate(now),
            ).exists():
                continue
            alert = DriftAlert.objects.create(
                model_version=version.version,
                site=f.site[:200],
                statistic=f.statistic,
                value=f.value,
                threshold=f.threshold,
                window_start=start,
                window_end=now,
                sample_size=f.sample_size,
                details=f.details,
            )
            audit_record(
                action=AuditEvent.Action.DRIFT_ALERT,
                target=alert,
                details={
                    "site": f.site,
                    "statistic": f.statistic,
                    "value": round(f.value, 4),
                    "threshold": f.threshold,
                },
            )
            alerts.append(alert)
    if alerts:
        _email_admins(version.version, alerts)
    return alerts


STATISTIC_NAMES = {
    "psi_score": "score distribution (PSI)",
    "psi_intensity": "intensity histogram (PSI)",
    "psi_long_side": "image size (PSI)",
    "share_not_analysed": "share not analysed",
    "share_failed": "share failed",
}


def _email_admins(version: str, alerts: list[DriftAlert]) -> None:
    recipients = list(
        get_user_model()
        .objects.filter(groups__name=ADMIN_GROUP, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )
    if not recipients:
        logger.warning("drift alerts raised but no admin has an e-mail address")
        return
    lines = [
        f"- {a.site}: {STATISTIC_NAMES.get(a.statistic, a.statistic)} {a.value:.3f} "
        f"(threshold {a.threshold:.3f}, {a.sample_size} radiographs)"
        for a in alerts
    ]
    send_mail(
        subject=f"[Fracture Review] drift alert for model {version}: {len(alerts)} finding(s)",
        message=(
            f"The daily drift check of model {version} found:\n\n" + "\n".join(lines) + "\n\n"
            "Review them on the model governance page (Audit > Models) and check the devices named."
        ),
        from_email=None,
        recipient_list=recipients,
        fail_silently=True,  # the alert is on the dashboard either way
    )
