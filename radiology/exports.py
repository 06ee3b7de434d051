"""CSV export of predictions joined with their latest review, shared by the audit dashboard and the admin.

Every export writes an AuditEvent (who took which rows, with which filters) before the first byte leaves.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from radiology.access import client_ip
from radiology.models import AuditEvent, Prediction
from radiology.services import audit_record

COLUMNS = (
    "prediction_id",
    "predicted_at",
    "model_version",
    "probability",
    "threshold",
    "model_label",
    "radiograph_id",
    "study_id",
    "accession_number",
    "body_region",
    "review_count",
    "review_decision",
    "review_final_label",
    "agrees_with_model",
    "review_reason_code",
    "review_reason_text",
    "reviewer",
    "reviewed_at",
)

# A cell that a spreadsheet would read as a formula (CSV injection through free text).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def prediction_row(prediction: Any) -> list[Any]:
    """One CSV row from a prediction annotated by selectors.prediction_export_rows."""
    reviewed = bool(prediction.review_decision)
    study = prediction.radiograph.study
    return [
        _cell(v)
        for v in (
            prediction.pk,
            prediction.created_at.isoformat(),
            prediction.model_version,
            f"{prediction.probability:.4f}",
            f"{prediction.threshold:.4f}",
            prediction.label,
            prediction.radiograph_id,
            study.pk,
            study.accession_number,
            study.body_region,
            prediction.review_count or 0,
            prediction.review_decision,
            prediction.review_final_label,
            ("yes" if prediction.review_final_label == prediction.label else "no") if reviewed else "",
            prediction.review_reason_code,
            prediction.review_reason_text,
            prediction.review_reviewer,
            prediction.review_created_at.isoformat() if prediction.review_created_at else "",
        )
    ]


class _Echo:
    """csv.writer needs a file; this one hands each written line straight back."""

    def write(self, value: str) -> str:
        return value


def prediction_csv_response(
    *, request: HttpRequest, rows: QuerySet[Prediction], filters: dict[str, Any]
) -> StreamingHttpResponse:
    count = rows.count()
    audit_record(
        action=AuditEvent.Action.EXPORT,
        actor=request.user,
        details={"what": "predictions.csv", "rows": count, "filters": filters, "path": request.path[:300]},
        client_ip=client_ip(request),
    )
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(COLUMNS)
        for prediction in rows.iterator(chunk_size=2000):
            yield writer.writerow(prediction_row(prediction))

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="predictions-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
