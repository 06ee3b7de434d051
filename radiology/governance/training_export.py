"""The retraining loop: reviewed radiographs out, in the manifest layout ``classifier.train`` reads.

    DIR/manifest.csv    sha256, path, label, split, cluster, region, hardware, view, width, height,
                        fracture_boxes, + provenance: site, device, station, model_version, reviewer_role,
                        reference (adjudicated | final_call), study, radiograph
    DIR/images/<sha256>.<png|jpg|dcm>   the stored file as received

The label is the reference standard (adjudicated where there is one, else the final call). A patient's
radiographs share one cluster and one split (train / val by a hash of the patient, so an export is
reproducible and no patient straddles both). Reviewer-drawn boxes go to ``fracture_boxes`` (normalised
"cx cy w h", ";"-separated) when a review carries any.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db.models.fields.json import KT

from radiology.governance.comparison import reference_labels
from radiology.models import AuditEvent, Prediction, Radiograph, Review
from radiology.roles import ADMIN_GROUP
from radiology.services.audit import audit_record

COLUMNS = [
    "sha256",
    "path",
    "label",
    "split",
    "cluster",
    "region",
    "hardware",
    "view",
    "width",
    "height",
    "fracture_boxes",
    "site",
    "device",
    "station",
    "model_version",
    "reviewer_role",
    "reference",
    "study",
    "radiograph",
]


@dataclass(frozen=True)
class ExportResult:
    images: int
    fractured: int
    train: int
    val: int
    manifest: Path


def _split_for(patient_key: str, val_fraction: float) -> str:
    bucket = int(hashlib.sha256(patient_key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def _boxes(review_boxes: object, width: int, height: int) -> str:
    if not isinstance(review_boxes, list) or not width or not height:
        return ""
    parts = []
    for box in review_boxes:
        try:
            x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
        except (KeyError, TypeError, ValueError):
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        parts.append(f"{cx:.4f} {cy:.4f} {abs(x1 - x0) / width:.4f} {abs(y1 - y0) / height:.4f}")
    return ";".join(parts)


def _ensure_both_classes_in_val(rows: list[dict[str, Any]]) -> None:
    """classifier.train scores every epoch on val, which needs both classes: in a small export whose hash
    split left a class out of val, one patient with that label (the first by name) moves there, as long as
    train keeps another patient with it."""
    for label in ("fractured", "not_fractured"):
        if any(r["split"] == "val" and r["label"] == label for r in rows):
            continue
        clusters = sorted({str(r["cluster"]) for r in rows if r["split"] == "train" and r["label"] == label})
        if len(clusters) < 2:
            continue
        for r in rows:
            if r["cluster"] == clusters[0]:
                r["split"] = "val"


def training_set_export(
    *, since: dt.date, out: Path, val_fraction: float = 0.2, actor: object = None
) -> ExportResult:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export into a new folder")
    reference = reference_labels()
    latest_review: dict[int, Review] = {}
    for review in (
        Review.objects.filter(radiograph_id__in=list(reference))
        .select_related("reviewer")
        .order_by("created_at", "id")
    ):
        latest_review[review.radiograph_id] = review
    shown_version = dict(
        Prediction.objects.filter(radiograph_id__in=list(reference))
        .order_by("created_at", "id")
        .values_list("radiograph_id", "model_version")
    )
    radiographs = (
        Radiograph.objects.filter(pk__in=list(reference), created_at__date__gte=since)
        .select_related("study__patient")
        .annotate(
            manufacturer=KT("dicom_attributes__Manufacturer"),
            device_model=KT("dicom_attributes__ManufacturerModelName"),
            station=KT("dicom_attributes__StationName"),
            view=KT("dicom_attributes__ViewPosition"),
        )
        .order_by("pk")
    )
    (out / "images").mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for radiograph in radiographs:
        positive, study_id, adjudicated = reference[radiograph.pk]
        standing = latest_review.get(radiograph.pk)
        extension = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}.get(radiograph.format, "bin")
        relative = f"images/{radiograph.sha256}.{extension}"
        with radiograph.image.open("rb") as source:
            (out / relative).write_bytes(source.read())
        patient_key = f"patient-{radiograph.study.patient_id}"
        reviewer = standing.reviewer if standing else None
        role = ""
        if reviewer is not None:
            role = "admin" if reviewer.groups.filter(name=ADMIN_GROUP).exists() else "clinician"
        rows.append(
            {
                "sha256": radiograph.sha256,
                "path": relative,
                "label": "fractured" if positive else "not_fractured",
                "split": _split_for(patient_key, val_fraction),
                "cluster": patient_key,
                "region": radiograph.study.body_region,
                "hardware": "0",
                "view": radiograph.view or "",
                "width": radiograph.width,
                "height": radiograph.height,
                "fracture_boxes": _boxes(
                    getattr(standing, "boxes", None), radiograph.width, radiograph.height
                ),
                "site": radiograph.manufacturer or "",
                "device": radiograph.device_model or "",
                "station": radiograph.station or "",
                "model_version": shown_version.get(radiograph.pk, ""),
                "reviewer_role": role,
                "reference": "adjudicated" if adjudicated else "final_call",
                "study": study_id,
                "radiograph": radiograph.pk,
            }
        )
    _ensure_both_classes_in_val(rows)
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    result = ExportResult(
        images=len(rows),
        fractured=sum(1 for r in rows if r["label"] == "fractured"),
        train=sum(1 for r in rows if r["split"] == "train"),
        val=sum(1 for r in rows if r["split"] == "val"),
        manifest=out / "manifest.csv",
    )
    audit_record(
        action=AuditEvent.Action.EXPORT,
        actor=actor,
        details={
            "what": "training set",
            "since": since.isoformat(),
            "images": result.images,
            "folder": str(out),
        },
    )
    return result
