"""Every export, in one place: the one row definition (`ExportRow`, a dataclass whose fields are the
columns), the CSV and JSON writers, and the CSV-injection guard. Used by the API, the admin and the
audit dashboard. Every export writes an AuditEvent (who took which rows, with which filters) before the
first byte leaves.

The row is the same everywhere; two sources fill it, because two questions are asked of it:
- `radiograph_rows`: a row per radiograph with its current prediction (the API's results export: what
  stands for each image);
- `prediction_rows`: a row per prediction of any model version (the audit export, in the admin and on the
  audit dashboard: how each version did against the clinicians). A radiograph predicted by two versions
  gives two rows, each with the review of that prediction.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from radiology import selectors
from radiology.access import client_ip
from radiology.governance.models import GuardrailRefusal
from radiology.models import AuditEvent, Prediction, Radiograph, Review
from radiology.services import audit_record

_JSON = DjangoJSONEncoder()

# A cell that a spreadsheet would read as a formula (CSV injection through free text).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: blank for None, yes / no for a boolean, timestamps as the JSON export writes
    them, and text that a spreadsheet would run as a formula (= + - @, tab, CR) quoted with a leading
    apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return _JSON.default(value)
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class _StandingReview(NamedTuple):
    """What a row says of the review that stands (the latest)."""

    decision: str
    final_label: str
    reason_code: str
    reason_text: str
    reviewer: str
    created_at: dt.datetime


@dataclass(frozen=True)
class ExportRow:
    """One radiograph with one of its predictions (None while it has none) and the review that stands,
    with how many reviews there are (None where there is none)."""

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
    band: str | None
    threshold: float | None
    predicted_at: dt.datetime | None
    not_analysed_code: str | None
    not_analysed_reason: str | None
    review_count: int
    review_decision: str | None
    review_final_label: str | None
    agrees_with_model: bool | None
    review_reason_code: str | None
    review_reason_text: str | None
    reviewer: str | None
    reviewed_at: dt.datetime | None

    @classmethod
    def of(
        cls,
        radiograph: Radiograph,
        prediction: Prediction | None,
        review: _StandingReview | None,
        review_count: int,
        refusal: GuardrailRefusal | None = None,
    ) -> ExportRow:
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
            band=(prediction.band or None) if prediction else None,  # blank before bands existed
            threshold=prediction.threshold if prediction else None,
            predicted_at=prediction.created_at if prediction else None,
            not_analysed_code=refusal.code if refusal else None,
            not_analysed_reason=refusal.reason if refusal else None,
            review_count=review_count,
            review_decision=review.decision if review else None,
            review_final_label=review.final_label if review else None,
            agrees_with_model=(review.final_label == prediction.label) if review and prediction else None,
            review_reason_code=(review.reason_code or None) if review else None,
            review_reason_text=(review.reason_text or None) if review else None,
            reviewer=review.reviewer if review else None,
            reviewed_at=review.created_at if review else None,
        )


COLUMNS = tuple(f.name for f in dataclasses.fields(ExportRow))


def radiograph_rows(radiographs: QuerySet[Radiograph]) -> Iterator[ExportRow]:
    """A row per radiograph with its current prediction and the radiograph's standing review (the API's
    results export). From export_radiographs: chunks keep memory flat, each prefetching its reviews."""
    for radiograph in radiographs.iterator(chunk_size=1000):
        reviews = list(radiograph.reviews.all())
        review = Review.latest(reviews)
        standing = (
            _StandingReview(
                review.decision,
                review.final_label,
                review.reason_code,
                review.reason_text,
                review.reviewer.get_username(),
                review.created_at,
            )
            if review
            else None
        )
        refusal = selectors.radiograph_refusal(radiograph)
        yield ExportRow.of(radiograph, radiograph.current_prediction, standing, len(reviews), refusal)


def prediction_rows(predictions: QuerySet[Prediction]) -> Iterator[ExportRow]:
    """A row per prediction, of any model version, with that prediction's standing review (the audit
    export). From selectors.prediction_export_rows, which annotates the review (`review_*`)."""
    for prediction in predictions.iterator(chunk_size=2000):
        p: Any = prediction
        standing = (
            _StandingReview(
                p.review_decision,
                p.review_final_label,
                p.review_reason_code,
                p.review_reason_text,
                p.review_reviewer,
                p.review_created_at,
            )
            if p.review_decision
            else None
        )
        yield ExportRow.of(prediction.radiograph, prediction, standing, p.review_count or 0)


def csv_lines(rows: Iterable[ExportRow]) -> Iterator[str]:
    """The header, then the rows, in chunks of about 64 KiB."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, name)) for name in COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(count: int, rows: Iterable[ExportRow]) -> Iterator[str]:
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
        csv_lines(prediction_rows(rows)),
        content_type="text/csv; charset=utf-8",
        filename=f"predictions-{stamp}.csv",
    )
