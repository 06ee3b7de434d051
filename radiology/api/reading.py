"""Reading-workflow operations: the reader's unaided call (blinded reading), confirming a whole study, and
the adjudication queue and decision; each with its schema and one example."""

from __future__ import annotations

from django.http import HttpResponseBase
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from radiology import services
from radiology.access import client_ip
from radiology.api import schema
from radiology.api import serializers as s
from radiology.api.idempotency import run_idempotently
from radiology.api.pagination import ApiPagination
from radiology.api.problems import Problem
from radiology.api.radiographs import REVIEW
from radiology.api.studies import STUDY_DETAIL
from radiology.api.views import ApiView, paginated, problem_from_service, radiograph_for, study_for
from radiology.models import Adjudication
from radiology.selectors import reading
from radiology.services import ServiceError

ADJUDICATION = {
    "id": 5,
    "radiograph": 4051,
    "study": 1377,
    "review": REVIEW,
    "trigger": "model_disagrees",
    "state": "open",
    "label": "",
    "adjudicator": None,
    "notes": "",
    "created_at": "2025-06-02T10:02:41.010Z",
    "decided_at": None,
}


class UnaidedReadCreateApi(ApiView):
    """The caller's own call on a radiograph before they look at the model's (blinded reading)."""

    parser_classes = [JSONParser]

    @schema.operation(
        operation_id="radiographs_unaided_read_create",
        tag="reviews",
        summary="Record your own call before looking at the model's (blinded reading)",
        description="A reader who reads blinded (their setting, or the site default) must record this "
        "before reviewing: a review without it is refused with `unaided_read_required`. Never changed once "
        "recorded (`already_recorded`), and refused after the caller has reviewed the radiograph "
        "(`already_seen`). The review then stores it beside the model's and the final call.",
        parameters=[schema.PK, schema.IDEMPOTENCY_KEY],
        request=s.UnaidedReadIn,
        request_example={"label": "not_fractured"},
        status=201,
        response=s.UnaidedReadOut,
        response_example={
            "id": 17,
            "radiograph": 4051,
            "label": "not_fractured",
            "reader": "dr.ada",
            "created_at": "2025-06-02T10:01:12.000Z",
        },
        # services.unaided_read_record: not_ready, already_seen, already_recorded (and invalid_label, which
        # the serializer's choices stop first)
        problems=(
            *schema.FOUND,
            *schema.BODY,
            *schema.IDEMPOTENT,
            "not_ready",
            "already_seen",
            "already_recorded",
        ),
    )
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._create(request, pk))

    def _create(self, request: Request, pk: int) -> Response:
        radiograph = radiograph_for(request, pk)
        serializer = s.UnaidedReadIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            (read,) = services.unaided_read_record(
                radiograph_ids=[radiograph.pk],
                reader=request.user,
                label=serializer.validated_data["label"],
                client_ip=client_ip(request),
            )
        except ServiceError as error:
            raise problem_from_service(error) from None
        return Response(s.UnaidedReadOut(read).data, status=201)


class StudyConfirmApi(ApiView):
    """Confirm the model's label on every radiograph of the study still awaiting review."""

    @schema.operation(
        operation_id="studies_confirm",
        tag="reviews",
        summary="Confirm every radiograph of the study still awaiting review",
        description="One confirmation per radiograph not yet reviewed, keeping the model's label; "
        "radiographs already reviewed (overridden, say) keep their review. All or nothing: in blinded mode "
        "each needs the caller's unaided call first. `nothing_to_confirm` when no radiograph awaits review.",
        parameters=[schema.PK, schema.IDEMPOTENCY_KEY],
        status=201,
        response=s.ReviewOut(many=True),
        response_example={**REVIEW, "decision": "confirm", "final_label": "fractured", "reason_code": ""},
        # services.study_confirm
        problems=(
            *schema.FOUND,
            *schema.POSTED,
            *schema.IDEMPOTENT,
            "nothing_to_confirm",
            "unaided_read_required",
            "adjudicated",
        ),
    )
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._confirm(request, pk))

    def _confirm(self, request: Request, pk: int) -> Response:
        study = study_for(request, pk)
        try:
            reviews = services.study_confirm(
                study_id=study.pk, reviewer=request.user, client_ip=client_ip(request)
            )
        except ServiceError as error:
            raise problem_from_service(error) from None
        return Response(s.ReviewOut(reviews, many=True).data, status=201)


class StudyReadWithoutModelApi(ApiView):
    """A study the model declined entirely, read without it (in the PACS): off the Not analysed worklist."""

    @schema.operation(
        operation_id="studies_read_without_model",
        tag="reviews",
        summary="Record that a study the model declined was read without it",
        description="For a study whose every radiograph the model declined (state `not_analysed`: outside "
        "its intended use). The caller has read it without the model; the study becomes `reviewed`, with "
        "`read_without_model_by` / `_at`, and leaves the Not analysed worklist. No label is recorded (the "
        "report is the reader's, in the PACS). Audited. A declined radiograph arriving later makes the "
        "study `not_analysed` again. `not_declined` for any other study, a second time included.",
        parameters=[schema.PK, schema.IDEMPOTENCY_KEY],
        response=s.StudyDetailOut,
        response_example={
            **STUDY_DETAIL,
            "state": "reviewed",
            "max_probability": None,
            "band": "",
            "reviewed_at": "2025-06-02T10:05:00.000Z",
            "read_without_model_by": "dr.ada",
            "read_without_model_at": "2025-06-02T10:05:00.000Z",
        },
        # services.study_read_without_model
        problems=(*schema.FOUND, *schema.POSTED, *schema.IDEMPOTENT, "not_declined"),
    )
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._read(request, pk))

    def _read(self, request: Request, pk: int) -> Response:
        study = study_for(request, pk)
        try:
            services.study_read_without_model(
                study_id=study.pk, reader=request.user, client_ip=client_ip(request)
            )
        except ServiceError as error:
            raise problem_from_service(error) from None
        return Response(s.StudyDetailOut(study_for(request, pk), context={"request": request}).data)


class AdjudicationListApi(ApiView):
    """Cases awaiting a second reader, oldest first (paginated)."""

    pagination_class = ApiPagination

    @schema.operation(
        operation_id="adjudications_list",
        tag="reviews",
        summary="Cases awaiting a second reader",
        description="Opened when a final call disagrees with a confident model band (fracture vs "
        "no_fracture) or with the reader's own unaided call. Oldest first, paginated.",
        response=s.AdjudicationOut(many=True),
        response_example=ADJUDICATION,
        problems=("not_found",),  # a page past the end (no filters)
    )
    def get(self, request: Request) -> Response:
        return paginated(self, request, reading.adjudication_queue(user=request.user), s.AdjudicationOut)


class AdjudicationDecideApi(ApiView):
    """The second reader's label: locked once recorded, the reference standard from then on."""

    parser_classes = [JSONParser]

    @schema.operation(
        operation_id="adjudications_decide",
        tag="reviews",
        summary="Record the second reader's label",
        description="Locked once recorded (`already_adjudicated`), audited, and the reference standard from "
        "then on; a clinician who reviewed the radiograph cannot adjudicate it (`own_case`).",
        parameters=[schema.PK, schema.IDEMPOTENCY_KEY],
        request=s.AdjudicationDecideIn,
        request_example={"label": "fractured", "notes": "Buckle fracture."},
        response=s.AdjudicationOut,
        response_example={
            **ADJUDICATION,
            "state": "decided",
            "label": "fractured",
            "adjudicator": "dr.grace",
            "notes": "Buckle fracture.",
            "decided_at": "2025-06-02T11:30:00.000Z",
        },
        # services.adjudication_decide
        problems=(*schema.FOUND, *schema.BODY, *schema.IDEMPOTENT, "already_adjudicated", "own_case"),
    )
    def post(self, request: Request, pk: int) -> HttpResponseBase:
        return run_idempotently(request, lambda: self._decide(request, pk))

    def _decide(self, request: Request, pk: int) -> Response:
        try:
            adjudication = reading.adjudication_get(user=request.user, pk=pk)
        except Adjudication.DoesNotExist:
            raise Problem("not_found", "No such adjudication.", status_code=404) from None
        serializer = s.AdjudicationDecideIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            decided = services.adjudication_decide(
                adjudication_id=adjudication.pk,
                adjudicator=request.user,
                client_ip=client_ip(request),
                **serializer.validated_data,
            )
        except ServiceError as error:
            raise problem_from_service(error) from None
        decided = reading.adjudication_get(user=request.user, pk=decided.pk)
        return Response(s.AdjudicationOut(decided).data)
