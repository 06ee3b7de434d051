"""Every export, in one place: the rows (each kind declared once, as a dataclass whose fields are the
columns), the CSV and JSON writers, and the CSV-injection guard. Used by the API, the admin and the
audit dashboard. Every export writes an AuditEvent (who took which rows, with which filters) before the
first byte leaves.

Two kinds of row, because the two questions differ:
- ResultRow: one radiograph, its current prediction and its standing review (the API's results export);
- PredictionRow: one prediction of any model version and its standing review (the audit export: how a
  version did against the clinicians, in the admin and on the audit dashboard).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from radiology.access import client_ip
from radiology.models import AuditEvent, Prediction, Radiograph, Review
from radiology.services import audit_record

_JSON = DjangoJSONEncoder()

# A cell that a spreadsheet would read as a formula (CSV injection through free text).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: blank for None, timestamps as the JSON export writes them, and text that a
    spreadsheet would run as a formula (= + - @, tab, CR) quoted with a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return _JSON.default(value)
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True)
class ResultRow:
    """One radiograph: its current prediction joined with its standing review (None where there is none)."""

    radiograph_id: int
    study_id: int
    accession_number: str
    body_region: str
    radiograph_status: str
    original_filename: str
    uploaded_at: dt.datetime
    prediction_id: int | None
    model_version: str | None
    probability: float | None
    model_label: str | None
    threshold: float | None
    predicted_at: dt.datetime | None
    review_decision: str | None
    review_final_label: str | None
    review_reason_code: str | None
    reviewer: str | None
    reviewed_at: dt.datetime | None

    @classmethod
    def of(cls, radiograph: Radiograph) -> ResultRow:
        """From a radiograph selected with its current prediction and prefetched reviews."""
        prediction = radiograph.current_prediction
        review = Review.latest(radiograph.reviews.all())
        return cls(
            radiograph_id=radiograph.pk,
            study_id=radiograph.study_id,
            accession_number=radiograph.study.accession_number,
            body_region=radiograph.study.body_region,
            radiograph_status=radiograph.status,
            original_filename=radiograph.original_filename,
            uploaded_at=radiograph.created_at,
            prediction_id=prediction.pk if prediction else None,
            model_version=prediction.model_version if prediction else None,
            probability=round(prediction.probability, 6) if prediction else None,
            model_label=prediction.label if prediction else None,
            threshold=prediction.threshold if prediction else None,
            predicted_at=prediction.created_at if prediction else None,
            review_decision=review.decision if review else None,
            review_final_label=review.final_label if review else None,
            review_reason_code=(review.reason_code or None) if review else None,
            reviewer=review.reviewer.get_username() if review else None,
            reviewed_at=review.created_at if review else None,
        )


@dataclass(frozen=True)
class PredictionRow:
    """One prediction joined with its standing review (blank where there is none)."""

    prediction_id: int
    predicted_at: str
    model_version: str
    probability: str
    threshold: str
    model_label: str
    radiograph_id: int
    study_id: int
    accession_number: str
    body_region: str
    review_count: int
    review_decision: str | None
    review_final_label: str | None
    agrees_with_model: str
    review_reason_code: str | None
    review_reason_text: str | None
    reviewer: str | None
    reviewed_at: str

    @classmethod
    def of(cls, prediction: Any) -> PredictionRow:
        """From a prediction annotated by selectors.prediction_export_rows (`review_*`)."""
        reviewed = bool(prediction.review_decision)
        study = prediction.radiograph.study
        agrees = "yes" if prediction.review_final_label == prediction.label else "no"
        return cls(
            prediction_id=prediction.pk,
            predicted_at=prediction.created_at.isoformat(),
            model_version=prediction.model_version,
            probability=f"{prediction.probability:.4f}",
            threshold=f"{prediction.threshold:.4f}",
            model_label=prediction.label,
            radiograph_id=prediction.radiograph_id,
            study_id=study.pk,
            accession_number=study.accession_number,
            body_region=study.body_region,
            review_count=prediction.review_count or 0,
            review_decision=prediction.review_decision,
            review_final_label=prediction.review_final_label,
            agrees_with_model=agrees if reviewed else "",
            review_reason_code=prediction.review_reason_code,
            review_reason_text=prediction.review_reason_text,
            reviewer=prediction.review_reviewer,
            reviewed_at=prediction.review_created_at.isoformat() if prediction.review_created_at else "",
        )


def columns(row_type: type[Any]) -> tuple[str, ...]:
    """A row kind's columns, in order: the dataclass's fields."""
    return tuple(f.name for f in dataclasses.fields(row_type))


RESULT_COLUMNS = columns(ResultRow)
PREDICTION_COLUMNS = columns(PredictionRow)


def result_rows(radiographs: QuerySet[Radiograph]) -> Iterator[ResultRow]:
    """Chunks keep memory flat for large exports; each chunk prefetches its reviews."""
    return (ResultRow.of(r) for r in radiographs.iterator(chunk_size=1000))


def prediction_rows(predictions: QuerySet[Prediction]) -> Iterator[PredictionRow]:
    return (PredictionRow.of(p) for p in predictions.iterator(chunk_size=2000))


def csv_lines(row_type: type[Any], rows: Iterable[Any]) -> Iterator[str]:
    """The header, then the rows, in chunks of about 64 KiB."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = columns(row_type)
    writer.writerow(names)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, name)) for name in names])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(count: int, rows: Iterable[Any]) -> Iterator[str]:
    """{"generated_at", "count", "results": [row, ...]}, streamed one row at a time."""
    head = {"generated_at": timezone.now(), "count": count}
    yield json.dumps(head, cls=DjangoJSONEncoder)[:-1] + ', "results": ['
    for index, row in enumerate(rows):
        yield ("," if index else "") + json.dumps(dataclasses.asdict(row), cls=DjangoJSONEncoder)
    yield "]}"


def download(chunks: Iterator[str], *, content_type: str, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def prediction_csv_response(
    *, request: HttpRequest, rows: QuerySet[Prediction], filters: dict[str, Any]
) -> StreamingHttpResponse:
    """The audit export (admin action, audit dashboard), recorded in the audit trail first."""
    count = rows.count()
    audit_record(
        action=AuditEvent.Action.EXPORT,
        actor=request.user,
        details={"what": "predictions.csv", "rows": count, "filters": filters, "path": request.path[:300]},
        client_ip=client_ip(request),
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    return download(
        csv_lines(PredictionRow, prediction_rows(rows)),
        content_type="text/csv; charset=utf-8",
        filename=f"predictions-{stamp}.csv",
    )
