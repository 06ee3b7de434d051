"""Monitoring per model version x body region x age band x sex x site/device x month.

`monitoring_refresh` (nightly, on an admin's request from the page, and `manage.py refresh_monitoring`)
rebuilds the summary table from every visible and shadow prediction and the reference standard (the
adjudicated label where there is one, else the standing review's final call), and records the rebuild
(`MonitoringBuild`). `monitoring_table` reads it with aggregate queries only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform

from radiology import dispatch
from radiology.governance.comparison import reference_labels
from radiology.governance.guardrails import age_in_years
from radiology.governance.models import MonitoringBin, MonitoringBuild, MonitoringCell, ShadowPrediction
from radiology.governance.stats import (
    ReliabilityBin,
    expected_calibration_error,
    reliability_from_sums,
    wilson,
)
from radiology.models import Label, Prediction

BINS = 10
# However often admins press "Rebuild now", a worker is asked at most this often (a rebuild reads every
# prediction; the summary it writes is the same until new evidence arrives).
REFRESH_REQUEST_SECONDS = 60
REFRESH_REQUESTED_KEY = "governance:monitoring:refresh-requested"
# Rebuild records kept (about one a day: a season of them); older ones are dropped by the rebuild itself.
BUILDS_KEPT = 120
AGE_BANDS = ((0, 18, "<18"), (18, 40, "18-39"), (40, 65, "40-64"), (65, 200, "65+"))
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "body_region": ("body_region",),
    "age_band": ("age_band",),
    "sex": ("sex",),
    "site": ("manufacturer", "device_model", "station"),
    "month": ("month",),
}

DIMENSION_LABELS = {
    "body_region": "Body region",
    "age_band": "Age band",
    "sex": "Sex",
    "site": "Site / device",
    "month": "Month",
}


def age_band(born: dt.date | None, on: dt.date) -> str:
    if born is None:
        return "unknown"
    age = age_in_years(born, on)
    return next((name for low, high, name in AGE_BANDS if low <= age < high), "unknown")


def _prediction_rows(model: Any) -> Iterator[tuple[Any, ...]]:
    prefix = "radiograph__"
    queryset = model.objects.annotate(
        # KeyTextTransform, not KT(): KT would read "radiograph" as the JSON field and the rest as keys.
        manufacturer=KeyTextTransform("Manufacturer", f"{prefix}dicom_attributes"),
        device_model=KeyTextTransform("ManufacturerModelName", f"{prefix}dicom_attributes"),
        station=KeyTextTransform("StationName", f"{prefix}dicom_attributes"),
    ).values_list(
        "model_version",
        "probability",
        "label",
        "radiograph_id",
        f"{prefix}study__body_region",
        f"{prefix}study__patient__date_of_birth",
        f"{prefix}study__patient__sex",
        f"{prefix}study__study_date",
        f"{prefix}created_at",
        "manufacturer",
        "device_model",
        "station",
    )
    yield from queryset.iterator(chunk_size=5000)


def monitoring_refresh() -> int:
    """Rebuild the summary table in one transaction, recorded as a ``MonitoringBuild``; returns the number
    of cells."""
    started = time.perf_counter()
    reference = reference_labels()
    cells: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 7)
    bins: dict[tuple[Any, ...], list[list[float]]] = defaultdict(lambda: [[0, 0.0, 0] for _ in range(BINS)])
    for model in (Prediction, ShadowPrediction):
        for (
            version,
            probability,
            label,
            radiograph_id,
            region,
            born,
            sex,
            study_date,
            created,
            manufacturer,
            device_model,
            station,
        ) in _prediction_rows(model):
            on = study_date or created.date()
            key = (
                version,
                region,
                age_band(born, on),
                sex or "U",
                (manufacturer or "")[:64],
                (device_model or "")[:64],
                (station or "")[:64],
                on.replace(day=1),
            )
            counts = cells[key]
            counts[0] += 1
            truth = reference.get(radiograph_id)
            if truth is None:
                continue
            positive, _, adjudicated = truth
            called = label == Label.FRACTURED
            counts[1] += 1
            counts[2 + (0 if called and positive else 1 if called else 3 if positive else 2)] += 1
            counts[6] += int(adjudicated)
            b = bins[key][min(int(probability * BINS), BINS - 1)]
            b[0] += 1
            b[1] += probability
            b[2] += positive
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One rebuild at a time (the nightly one and an admin's may meet): two at once would each delete
            # the cells they saw and insert their own, and both sets would stay. Readers are not blocked.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {MonitoringCell._meta.db_table} IN EXCLUSIVE MODE")
        MonitoringCell.objects.all().delete()
        created_cells = MonitoringCell.objects.bulk_create(
            [
                MonitoringCell(
                    model_version=k[0],
                    body_region=k[1],
                    age_band=k[2],
                    sex=k[3],
                    manufacturer=k[4],
                    device_model=k[5],
                    station=k[6],
                    month=k[7],
                    predictions=c[0],
                    reviewed=c[1],
                    tp=c[2],
                    fp=c[3],
                    tn=c[4],
                    fn=c[5],
                    adjudicated=c[6],
                )
                for k, c in cells.items()
            ],
            batch_size=2000,
        )
        MonitoringBin.objects.bulk_create(
            [
                MonitoringBin(cell=cell, bin=i, n=int(b[0]), sum_probability=b[1], positives=int(b[2]))
                for cell, key in zip(created_cells, cells, strict=True)
                if key in bins
                for i, b in enumerate(bins[key])
                if b[0]
            ],
            batch_size=5000,
        )
        MonitoringBuild.objects.create(
            cells=len(created_cells),
            predictions=sum(c[0] for c in cells.values()),
            seconds=time.perf_counter() - started,
        )
        newest_first = MonitoringBuild.objects.order_by("-built_at", "-pk").values_list("pk", flat=True)
        MonitoringBuild.objects.filter(pk__in=list(newest_first[BUILDS_KEPT:])).delete()
    return len(created_cells)


def monitoring_last_build() -> MonitoringBuild | None:
    """The rebuild whose summary the page shows, or None before the first."""
    return MonitoringBuild.objects.order_by("-built_at", "-pk").first()


def monitoring_request_refresh() -> Literal["sent", "already_asked", "not_sent"]:
    """Ask a worker to rebuild the summary now, at most once per ``REFRESH_REQUEST_SECONDS`` however often
    it is asked: "sent", "already_asked" (a request went out moments ago) or "not_sent" (the broker could
    not be reached)."""
    if not cache.add(REFRESH_REQUESTED_KEY, 1, REFRESH_REQUEST_SECONDS):
        return "already_asked"
    if dispatch.send_monitoring_refresh():
        return "sent"
    # Not sent: the next request tries again at once rather than waiting out the window.
    cache.delete(REFRESH_REQUESTED_KEY)
    return "not_sent"


@dataclass(frozen=True)
class MonitoringRow:
    model_version: str
    group: tuple[Any, ...]
    predictions: int
    reviewed: int
    adjudicated: int
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    specificity: float | None
    specificity_ci: tuple[float, float] | None
    agreement: float | None
    agreement_ci: tuple[float, float] | None
    ece: float | None

    @property
    def label(self) -> str:
        """The group as a reader names it ("unknown" for what the radiograph did not say)."""
        parts = [str(part) for part in self.group if part not in (None, "")]
        if len(self.group) == 3 and not parts:  # site: a PNG or JPEG upload carries no DICOM header
            return "unknown device (no DICOM header)"
        return " / ".join(parts) or "unknown"


def _filtered(filters: dict[str, Any]) -> QuerySet[MonitoringCell]:
    cells = MonitoringCell.objects.all()
    condition = Q()
    for name, value in filters.items():
        if value not in (None, ""):
            condition &= Q(**{name: value})
    return cells.filter(condition)


def monitoring_table(*, by: str, filters: dict[str, Any] | None = None) -> list[MonitoringRow]:
    """Rows per model version x the chosen dimension, summed over everything else (aggregate queries)."""
    dims = DIMENSIONS[by]
    cells = _filtered(filters or {})
    totals = (
        cells.values("model_version", *dims)
        .annotate(
            n=Sum("predictions"),
            r=Sum("reviewed"),
            a=Sum("adjudicated"),
            tp=Sum("tp"),
            fp=Sum("fp"),
            tn=Sum("tn"),
            fn=Sum("fn"),
        )
        .order_by("model_version", *dims)
    )
    calibration: dict[tuple[Any, ...], list[list[float]]] = defaultdict(
        lambda: [[0, 0.0, 0] for _ in range(BINS)]
    )
    for row in (
        MonitoringBin.objects.filter(cell__in=cells)
        .values(*[f"cell__{d}" for d in ("model_version", *dims)], "bin")
        .annotate(n=Sum("n"), p=Sum("sum_probability"), y=Sum("positives"))
    ):
        key = tuple(row[f"cell__{d}"] for d in ("model_version", *dims))
        calibration[key][row["bin"]] = [row["n"], row["p"], row["y"]]
    rows = []
    for t in totals:
        tp, fp, tn, fn = t["tp"], t["fp"], t["tn"], t["fn"]
        key = tuple(t[d] for d in ("model_version", *dims))
        sums = calibration.get(key)
        ece = None
        if sums:
            ece = expected_calibration_error(reliability_from_sums(*zip(*sums, strict=True)))
        rows.append(
            MonitoringRow(
                t["model_version"],
                key[1:],
                t["n"],
                t["r"],
                t["a"],
                tp / (tp + fn) if tp + fn else None,
                wilson(tp, tp + fn),
                tn / (tn + fp) if tn + fp else None,
                wilson(tn, tn + fp),
                (tp + tn) / t["r"] if t["r"] else None,
                wilson(tp + tn, t["r"]),
                ece,
            )
        )
    return rows


def monitoring_reliability(*, filters: dict[str, Any] | None = None) -> dict[str, list[ReliabilityBin]]:
    """The reliability diagram of each model version over the filtered cells."""
    sums: dict[str, list[list[float]]] = defaultdict(lambda: [[0, 0.0, 0] for _ in range(BINS)])
    for row in (
        MonitoringBin.objects.filter(cell__in=_filtered(filters or {}))
        .values("cell__model_version", "bin")
        .annotate(n=Sum("n"), p=Sum("sum_probability"), y=Sum("positives"))
    ):
        sums[row["cell__model_version"]][row["bin"]] = [row["n"], row["p"], row["y"]]
    return {
        version: reliability_from_sums(*zip(*bins, strict=True)) for version, bins in sorted(sums.items())
    }


def monitoring_choices() -> dict[str, list[Any]]:
    cells = MonitoringCell.objects.all()
    return {
        "model_version": list(
            cells.values_list("model_version", flat=True).distinct().order_by("model_version")
        ),
        "month": list(cells.values_list("month", flat=True).distinct().order_by("-month")),
    }
